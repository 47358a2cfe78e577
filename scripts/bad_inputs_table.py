"""Write docs/bad_inputs.md: run every case of tests/experiments/bad_inputs.py and record the error it raises.

    .venv/bin/python scripts/bad_inputs_table.py          # regenerate the table
    .venv/bin/python scripts/bad_inputs_table.py --check  # exit 1 if the file is out of date

A case that does not raise what it expects is reported and nothing is written.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "tests" / d) for d in ("experiments", "")]
os.environ.setdefault("WANDB_MODE", "disabled")  # a case that failed to fail must not reach W&B

import bad_inputs as bi  # noqa: E402
import torch  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the file is up to date")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    outcomes = {case.id: bi.run_case(case) for case in bi.CASES}
    problems = [p for case in bi.CASES if (p := bi.check(case, outcomes[case.id])) is not None]
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} case(s) do not raise what they expect; nothing written", file=sys.stderr)
        return 1
    text = bi.render(outcomes)
    rel = bi.DOC.relative_to(bi.ROOT)
    if args.check:
        same = bi.DOC.is_file() and bi.DOC.read_text() == text
        print(f"{rel} is {'up to date' if same else f'out of date: run {bi.REGENERATE}'}")
        return 0 if same else 1
    bi.DOC.write_text(text)
    print(f"wrote {rel}: {len(bi.CASES)} cases in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
