"""Time and peak memory of ``sg.load_model`` on hostile model files (recipes asking for far more
than the file holds) and, for scale, on a legit DDPM++ CIFAR-10 file.

Each file is loaded in a fresh process; the peak resident memory is read from
``/proc/self/status`` (``VmHWM``, reset after the imports), over the memory after the imports.
The hostile files are those of ``tests/files/test_model_file_limits.py``. Linux only.

    .venv/bin/python benchmarks/hostile_model_file.py  # prints a Markdown table (about a minute)
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "files"))

from test_model_file_limits import hostile_files, run_child  # noqa: E402

import sde_gen as sg  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-legit", action="store_true", help="skip the 62M-parameter legit file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        files = hostile_files(Path(folder))
        if not args.no_legit:
            torch.manual_seed(0)
            model = sg.ScoreModel(sg.UNet.ddpmpp_cifar10(), sg.VPSDE())
            files["legit ddpmpp_cifar10 (61.8M parameters)"] = sg.save_model(
                Path(folder) / "legit.safetensors", model
            )
            del model
        print(
            f"torch {torch.__version__}, {platform.processor() or platform.machine()}, one process per file\n"
        )
        print("| file | bytes | seconds | extra peak MB | outcome |")
        print("|---|---|---|---|---|")
        for name, path in files.items():
            out = run_child([path])
            case = out["cases"][str(path)]
            outcome = case["outcome"].replace(f"model file {path}", "model file F")
            outcome = outcome if len(outcome) < 160 else outcome[:157] + "..."
            print(
                f"| {name} | {path.stat().st_size:,} | {case['seconds']:.3f} | {out['extra_kb'] / 1024:.0f} "
                f"| {outcome.replace('|', '/')} |"
            )


if __name__ == "__main__":
    main()
