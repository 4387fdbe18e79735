"""`mar3d evaluate`: generated meshes against ground truth, following docs/protocol.md."""
from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

from mar3d.cli.common import HelpFormatter
from mar3d.cli.errors import CLIError


def add_parser(sub, name: str) -> None:
    p = sub.add_parser(
        name, help="score predicted meshes against ground truth (CD, F-score, NC; docs/protocol.md)",
        description=(
            "Evaluate predicted meshes against ground truth as docs/protocol.md §2 defines it: normalize both "
            "(bounding-box centre to the origin, longest side 2), align the ground truth (exactly from the "
            "input view's camera with --views, otherwise by rotation search + ICP), sample 100,000 surface "
            "points on each and compute Chamfer distance, F-score at 0.1/0.05/0.02 and normal consistency. "
            "Predictions pair with ground truth by id: a file's stem or a sub-folder's name; a prediction "
            "'<id>_view<j>' pairs with ground truth '<id>' and was generated from view j. GT may be a "
            "folder of meshes or a prepared directory (`mar3d prepare` output). Writes OUT/metrics.csv, "
            "OUT/metrics.json, OUT/report.html (normal-map renders), OUT/aligned/<id>.{pred,gt}.glb. "
            "Exit status 1 if any pair failed or any prediction has no ground truth."),
        formatter_class=HelpFormatter)
    p.add_argument("--pred", required=True, metavar="DIR", help="predicted meshes")
    p.add_argument("--gt", required=True, metavar="DIR", help="ground-truth meshes, or a prepared directory")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--views", metavar="VIEWS",
                     help="known cameras: a views.json, or a prepared directory with <id>/views.json; "
                          "the ground truth is rotated into the input view's frame and not searched")
    how.add_argument("--align", choices=["search", "none"], default="search",
                     help="without cameras: rotation search + ICP, or none (frames already agree)")
    p.add_argument("--view", type=int, default=0,
                   help="with --views: the view index of predictions whose id has no _view<j> suffix")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--workers", type=int, default=1, help="worker processes (one pair each)")
    p.add_argument("--iou", action="store_true", help="also volume IoU on a 128^3 winding-number grid")
    p.add_argument("--seed", type=int, default=0, help="surface sampling seed")
    p.add_argument("--render-resolution", type=int, default=256,
                   help="pixel size of each normal-map render in the report (0 = no renders)")


def run(args) -> int:
    from tqdm import tqdm

    from mar3d.evaluation import report
    from mar3d.evaluation.batch import RENDERS_DIR, EvaluateSettings, find_ground_truth, find_meshes, match, run_pairs

    for option, folder in (("--pred", args.pred), ("--gt", args.gt)):
        if not Path(folder).is_dir():
            raise CLIError(f"{option} {folder}: no such folder")
    if args.views and not Path(args.views).exists():
        raise CLIError(f"--views {args.views}: no such file or folder")
    if args.workers < 1:
        raise CLIError(f"--workers must be >= 1, got {args.workers}")
    if args.render_resolution < 0:
        raise CLIError(f"--render-resolution must be >= 0, got {args.render_resolution}")
    settings = EvaluateSettings(align="view" if args.views else args.align, views=args.views, view=args.view,
                                seed=args.seed, iou=args.iou, render_resolution=args.render_resolution)

    pairs, unmatched_pred, unmatched_gt = match(find_meshes(args.pred), find_ground_truth(args.gt))
    if not pairs:
        raise CLIError(f"no prediction in {args.pred} has the id of a ground-truth mesh in {args.gt} "
                       f"(ids are file stems or folder names; see --help)")
    for pred_id in unmatched_pred:
        print(f"unmatched: prediction '{pred_id}' has no ground truth in {args.gt}", file=sys.stderr)
    if unmatched_gt:
        print(f"note: {len(unmatched_gt)} ground-truth id(s) have no prediction", file=sys.stderr)

    out = Path(args.out)
    bar = tqdm(total=len(pairs), unit="pair", desc="evaluate", dynamic_ncols=True, file=sys.stderr)

    def on_record(record: dict) -> None:
        bar.update(1)
        if record["status"] != "ok":
            where = f"{record['file']}: " if record["file"] else ""
            tqdm.write(f"failed: {record['id']}: {where}{record['reason']}", file=sys.stderr)

    try:
        records = run_pairs(pairs, out, settings, workers=args.workers, on_record=on_record)
    finally:
        bar.close()
    protocol = {"normalization": "bbox centre -> origin, longest side -> 2", **asdict(settings)}
    unmatched = {"predictions": unmatched_pred, "ground_truth": unmatched_gt}
    report.write_csv(out / report.CSV_FILE, records)
    report.write_json(out / report.JSON_FILE, records, protocol, unmatched)
    report.write_html(out / report.HTML_FILE, records, protocol, unmatched, out / RENDERS_DIR)
    print(report.summary_table(records))
    failed = sum(r["status"] != "ok" for r in records)
    print(f"evaluated {len(records) - failed} ok, {failed} failed, {len(unmatched_pred)} unmatched prediction(s) "
          f"-> {out / report.HTML_FILE}")
    return 1 if failed or unmatched_pred else 0
