"""The models a run can name (built-in decoder, transformers, user factories), their data and tokenizers."""
