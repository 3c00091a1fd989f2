"""What a stage worker tells its launcher while it runs: one JSON object per line, marked.

Workers print ``@pipenem {"event": "step", "stage": 3, "step": 7, "loss": 4.42}``; the launcher
parses these (never a regex over human text), hands them to whoever follows the run (a
sweep's progress bar), and shows :func:`describe`'s human line in the log. Anything else a
worker prints (warnings, a traceback) passes through as is.
"""

from __future__ import annotations

import json
from typing import Any

MARK = "@pipenem "


def emit(event: str, **fields: Any) -> None:
    """Print one progress message (from a worker)."""
    print(MARK + json.dumps({"event": event, **fields}), flush=True)


def parse(line: str) -> dict[str, Any] | None:
    """The message on ``line``, or None for ordinary output."""
    if not line.startswith(MARK):
        return None
    try:
        msg = json.loads(line[len(MARK) :])
    except json.JSONDecodeError:
        return None
    return msg if isinstance(msg, dict) and "event" in msg else None


def describe(msg: dict[str, Any]) -> str:
    """The human line for a message: 'stage 3: step 7 loss 4.4200'."""
    stage, event = msg.get("stage"), msg["event"]
    if event == "joined":
        text = "joined its links"
    elif event == "step":
        text = f"step {msg['step']} " + (f"loss {msg['loss']:.4f}" if msg.get("loss") is not None else "done")
    elif event == "failed":
        text = f"failed: {msg.get('error', '')}"
    else:
        text = str(msg.get("text", event))
    return f"stage {stage}: {text}"
