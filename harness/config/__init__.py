"""What a run is configured with: the validated schema (``schema.py``) and the named device
profiles of modeled compute (``profiles.py``). Data only: nothing here imports the code it
configures (models, compressors, runtimes); ``harness.runtime.check`` cross-checks a run."""
