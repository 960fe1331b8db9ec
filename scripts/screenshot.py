"""The README's picture of the report: the quick start run for real, then its report.html in headless chromium.

    .venv/bin/python scripts/screenshot.py                      # -> docs/report.png (about 2 minutes on 2 cores)
    .venv/bin/python scripts/screenshot.py --report runs/x/report/report.html   # an existing report

Runs exactly the README's quick start (simulate 40 jets, ingest, pretrain and fine-tune with the tiny
preset, a scratch baseline, evaluate, report) in --work, opens report.html with Debian's chromium and
chromedriver (`apt-get install chromium chromium-driver`, as .ci/run does), saves the top of the page
as a PNG and reduces it to a 256-colour palette so the committed file stays small.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def jetlib(*args: str, cwd: Path) -> str:
    """One quick-start step, as `python -m jetlib`; returns its stdout's last line."""
    env = {**os.environ, "JETLIB_PROGRESS": "0"}
    done = subprocess.run([sys.executable, "-m", "jetlib", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"jetlib {args[0]} failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout.strip().splitlines()[-1]


def quick_start(work: Path, n_jets: int) -> Path:
    """The README's quick start in ``work``; returns the report's path."""
    jetlib("simulate", "--n-jets", str(n_jets), "--seed", "0", "--out", "jets.h5", cwd=work)
    data = jetlib("ingest", "jets.h5", "--store", "store", cwd=work)
    run = "runs/quick"
    jetlib("pretrain", "--data", data, "--out", f"{run}/pretrain", "--preset", "tiny", cwd=work)
    jetlib("finetune", "--data", data, "--task", "cls", "--mode", "finetune", "--init", f"{run}/pretrain",
           "--preset", "tiny", "--out", f"{run}/cls-finetune", cwd=work)
    jetlib("finetune", "--data", data, "--task", "cls", "--mode", "scratch", "--preset", "tiny",
           "--out", f"{run}/cls-scratch", cwd=work)
    for model in ("cls-finetune", "cls-scratch"):
        jetlib("evaluate", "--data", data, "--model", f"{run}/{model}", "--out", f"{run}/results", cwd=work)
    jetlib("report", "--run", run, cwd=work)
    return work / run / "report" / "report.html"


def screenshot(report: Path, out: Path, width: int, height: int) -> None:
    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        sys.exit("needs Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver")
    with tempfile.TemporaryDirectory() as profile:
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     f"--user-data-dir={profile}", f"--window-size={width},{height}"):
            opts.add_argument(flag)
        driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
        try:
            driver.get(report.resolve().as_uri())
            raw = out.with_suffix(".raw.png")
            driver.save_screenshot(str(raw))
        finally:
            driver.quit()
    with Image.open(raw) as picture:  # a palette keeps text sharp at a fraction of the bytes
        picture.convert("RGB").quantize(colors=256).save(out, optimize=True)
    raw.unlink()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--report", type=Path, help="an existing report.html (not given: run the quick start first)")
    p.add_argument("--work", type=Path, help="folder for the quick start (not given: a temporary one)")
    p.add_argument("--n-jets", type=int, default=40, help="jets the quick start simulates")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "report.png", help="the PNG to write")
    p.add_argument("--width", type=int, default=1200)
    p.add_argument("--height", type=int, default=1500)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = args.report
        if report is None:
            work = args.work or Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            report = quick_start(work, args.n_jets)
        screenshot(report, args.out, args.width, args.height)
    print(f"{args.out} ({args.out.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
