#!/usr/bin/env python
"""Merge partial sweep outputs (run in parallel, one model each) into one file.

    python scripts/merge_sweeps.py data/sweeps/bits.json part1.json part2.json ...

Records are concatenated; each part's meta (command, backend, seconds) is kept under "parts".
"""

import json
import sys
from pathlib import Path


def main(argv):
    if len(argv) < 3:
        raise SystemExit(__doc__)
    out, parts = Path(argv[1]), [Path(p) for p in argv[2:]]
    records, metas = [], []
    for p in parts:
        data = json.loads(p.read_text())
        records += data["records"]
        metas.append(data["meta"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": {"parts": metas}, "records": records}, indent=1) + "\n")
    print(f"wrote {out}: {len(records)} records from {len(parts)} parts")


if __name__ == "__main__":
    main(sys.argv)
