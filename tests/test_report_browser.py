"""The HTML report as a browser renders it: headless Chromium at 1400 px wide."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.results.schema import link_row, trial_row
from harness.results.store import ResultStore
from tests.conftest import pipenem

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
needs_browser = pytest.mark.skipif(
    BROWSER is None, reason="no Chromium (apt-get install chromium; .ci/run installs it)"
)

PROBE = """<script>window.addEventListener('load', () => {
  const d = document.documentElement;
  document.body.setAttribute('data-scroll-width', d.scrollWidth);
  document.body.setAttribute('data-client-width', d.clientWidth);
  document.body.setAttribute('data-link-panels', document.querySelectorAll("img[alt^='bytes_per_link']").length);
});</script>"""


def _results(root: Path) -> Path:
    """Distributed trials on two topologies (4 and 8 stages), every trial column filled."""
    store = ResultStore(root)
    trials, links = [], []
    for topo, stages in (("ci-4stage", 4), ("beyond-topk-8stage", 8)):
        for comp, rate in (("none", None), ("column-fwd+bwd", 0.9)):
            tid = f"{topo}-{comp}"
            trials.append(
                trial_row(
                    {
                        "trial_id": tid,
                        "suite": "two-networks",
                        "topology": topo,
                        "shaper": "tbf",
                        "compressor": comp,
                        "rate": rate,
                        "fwd": "column" if rate else "none",
                        "bwd": "column" if rate else "none",
                        "direction": "fwd+bwd" if rate else "none",
                        "mode": "train",
                        "compute": "modeled",
                        "execution": "distributed",
                        "backend": "netns",
                        "runtime": "pipenem",
                        "device": "a10g",
                        "seed": 0,
                        "status": "ok",
                        "tokens_per_s": 1000.0 * (9 if rate else 1),
                        "throughput_kind": "pipeline over emulated links",
                        "error": "a long error text that must not widen the page " * 3,
                    }
                )
            )
            for i in range(stages - 1):
                for direction in ("forward", "backward"):
                    payload = (1 << 20) // (10 if rate else 1)
                    links.append(
                        link_row(
                            {
                                "trial_id": tid,
                                "link": f"{i}-{i + 1}",
                                "direction": direction,
                                "window": -1,
                                "payload_bytes": payload,
                                "dense_bytes": 1 << 20,
                                "interface_bytes": int(payload * 1.05),
                            }
                        )
                    )
    steps = [
        {"trial_id": t["trial_id"], "step": k, "stage": 0, "loss": None, "tokens": 1000, "start": k, "end": k + 1.0}
        for t in trials
        for k in range(4)
    ]
    store.append("steps", steps)
    store.append("links", links)
    store.append("trials", trials)
    return root


@needs_browser
def test_the_report_fits_1400_px_and_draws_each_networks_links_apart(tmp_path: Path) -> None:
    res = _results(tmp_path / "res")
    r = pipenem("report", str(res))
    assert r.returncode == 0, r.stdout + r.stderr
    page = (res / "report.html").read_text()
    probe = res / "probe.html"
    probe.write_text(page + PROBE)
    dom = subprocess.run(
        [
            BROWSER,
            "--headless",
            "--no-sandbox",  # root in CI
            "--disable-gpu",
            "--window-size=1400,1000",
            "--virtual-time-budget=5000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    m = re.search(r'data-scroll-width="(\d+)" data-client-width="(\d+)" data-link-panels="(\d+)"', dom)
    assert m, dom[-2000:]
    scroll, client, panels = (int(v) for v in m.groups())
    assert client > 1300  # the window really is ~1400 px wide
    assert scroll <= client, f"the page scrolls sideways: {scroll} px of content in a {client} px window"
    assert panels == 2  # one bytes-per-link picture per topology
    assert "Bytes per link" not in page or page.count("alt='bytes_per_link_") == 2
