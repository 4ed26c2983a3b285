"""labels.csv for an experiment folder, including folders of older versions.

    python -m flows.export <experiment folder> [--format csv|parquet] [--out PATH]

Every run writes ``labels.csv`` in its folder (docs/outputs.md); this writes it from
the folder's stored stages and answers for a folder that has none (or in Parquet,
which needs pyarrow). No Prefect run: it reads files and writes one.
"""

import argparse
import sys
from pathlib import Path

from store.outputs import labels_of_folder, write_labels


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flows.export", description="Write an experiment's labels.csv.")
    p.add_argument("folder", help="the experiment's folder (artifacts/al-<hash>)")
    p.add_argument("--format", choices=("csv", "parquet"), default="csv")
    p.add_argument("--out", default=None, help="the output file (default: labels.csv or labels.parquet in the folder)")
    args = p.parse_args(argv)
    try:
        rows = labels_of_folder(Path(args.folder))
        out = Path(args.out) if args.out else Path(args.folder).expanduser().resolve() / f"labels.{args.format}"
        write_labels(out, rows, fmt=args.format)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{len(rows)} labelled items -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
