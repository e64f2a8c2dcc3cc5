"""The `stemsift` command: one subcommand per DVC stage plus validate / query. Logic lives in the package."""
from __future__ import annotations

import argparse
import signal
import sys
import warnings
from importlib import import_module

from stemsift.audio import AudioError
from stemsift.params import ParamsError, load_params
from stemsift.stemset import StemSetError

STAGES = {
    "prepare": "render the default synthetic stem set or ingest a real folder (params: data) -> data/raw",
    "contaminate": "simulate defects on the train split, truth kept (params: contaminate) -> data/contaminated",
    "embed": "frame embeddings of the train and reference stems, cached by stem hash (params: embed) -> data/embeddings",
    "refine": "self-refining labels: classifier Ψ on random mixes, relabel each stem, repeat (params: refine) -> data/refined",
    "score": "score every training stem with each cleaner in score.cleaners (params: score + cleaner blocks) -> data/scores",
    "catalogue": "assemble the DuckDB catalogue from the stages' tables (params: catalogue) -> data/catalogue.duckdb",
    "select": "selections of the fixed training sets: baseline, oracle (truly clean), reference (params: select)",
    "filter": "the cleaned set: score.cleaner's scores at filter.ratio -> the filtered stem set data/filtered",
    "train": "train one Open-Unmix separator per seed on a training set, one MLflow run each (params: train)",
    "evaluate": "separate the clean test songs, museval v4 SDR per target (params: evaluate)",
    "audit": "duplicates and near duplicates across splits (leakage), bad mixtures, silent / clipped stems (params: audit) -> data/audit",
    "listen": "static listening report of the lowest-scored songs, keyboard verdicts as CSV (params: listen) -> reports/listen/index.html",
    "report": "the baseline / cleaned / refined / oracle / reference comparison -> metrics/separation.json",
}
PER_SET = ("train", "evaluate")  # stages run once per training set (DVC foreach)


def _stage(args) -> None:
    from stemsift.cost import stage_cost

    stage = import_module(f"stemsift.stages.{args.command}")
    params = load_params(args.params)
    name = f"{args.command}-{args.set}" if args.command in PER_SET else args.command
    with stage_cost(name):  # metrics/cost/<stage>.json: seconds and peak MB, next to the stage's gain
        stage.run(params, args.set) if args.command in PER_SET else stage.run(params)


def _validate(args) -> None:
    from stemsift.stemset import StemSet, raise_first

    findings = StemSet(args.root).validate(deep=not args.quick)
    for f in findings:
        print(("error: " if f.fatal else "warning: ") + str(f), file=sys.stderr)
    raise_first([f for f in findings if f.fatal])
    print(f"{args.root}: ok ({sum(not f.fatal for f in findings)} warnings)")


def _query(args) -> None:
    import pandas as pd

    from stemsift.catalogue import EXAMPLE_QUERIES, query

    sqls = EXAMPLE_QUERIES if args.examples else {"": args.sql}
    if not args.examples and not args.sql:
        raise ValueError("give SQL or --examples")
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.max_rows", 60):
        for title, sql in sqls.items():
            if title:
                print(f"-- {title}")
            df = query(args.db, sql)
            more = f"\n... {len(df) - args.rows} more rows" if len(df) > args.rows else ""
            print(df.head(args.rows).to_string(index=False) + more, end="\n\n")


def _export(args) -> None:
    from stemsift.export import export
    from stemsift.params import FilterParams, stage_params

    from pathlib import Path

    params = load_params(args.params) if Path(args.params).is_file() or not args.stems else {}
    src = args.stems or stage_params(params, "filter", FilterParams).out
    info = export(src, args.format, args.out, params)
    print(f"export: {info['train_songs']} training songs ({args.format}, {info['links']} hard links, "
          f"{info['copies']} copies) -> {args.out} (card: {args.out}/README.md)")


def _curate(args) -> None:
    from stemsift import curate

    ws = curate.run(args.folder, args.workspace, args.cleaners, args.format)
    print(f"curate: cleaned set {ws}/data/filtered, listening report {ws}/reports/listen/index.html, "
          f"{ws}/metrics/filter.json, export {ws}/exports; no separator trained")


def _detection(args) -> None:
    from stemsift import sweep

    sweep.detection()


def _evidence(args) -> None:
    from stemsift import evidence

    evidence.run(load_params(args.params), args.scale, args.collect_only)


def _gc(args) -> None:
    from stemsift.stemset import gc

    removed = gc(args.folders)
    for p in removed:
        print(f"gc: removed {p} (left by a killed run)")
    print(f"gc: {len(removed)} leftover temp folder(s) of killed runs removed under {', '.join(args.folders)}")


def _sweep(args) -> None:
    from stemsift import sweep

    sweep.run()


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="stemsift", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    for name, help_ in STAGES.items():
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
        if name in PER_SET:
            from stemsift.params import TRAIN_SETS

            sp.add_argument("--set", required=True, choices=TRAIN_SETS, help="training set")
        sp.set_defaults(func=_stage)
    sp = sub.add_parser("validate", help="check a stem-set folder (manifest, files, rates, hashes, silence)")
    sp.add_argument("root", help="stem-set folder holding manifest.parquet")
    sp.add_argument("--quick", action="store_true", help="manifest checks only, no decoding")
    sp.set_defaults(func=_validate)
    sp = sub.add_parser("export", help="write the cleaned set for a trainer (MSST dataset types 1-3, or a CSV) with a dataset card")
    sp.add_argument("--format", required=True, choices=("msst-type1", "msst-type2", "msst-type3", "csv"))
    sp.add_argument("out", help="output folder (replaced if it is an earlier export)")
    sp.add_argument("--stems", help="filtered stem set (default: filter.out of the params file)")
    sp.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    sp.set_defaults(func=_export)
    sp = sub.add_parser("curate", help="curate your own folder (MUSDB18-HQ wav tree, .stem.mp4, MoisesDB): ingest, embed, "
                                       "blind cleaners, automatic ratio, audit, listening report, catalogue, export; "
                                       "no separator trained (dvc repro curate/dvc.yaml)")
    sp.add_argument("folder", help="the folder to curate (train/<song>/{mixture,vocals,drums,bass,other}.wav, ...)")
    sp.add_argument("--cleaners", nargs="+", help="cleaners to score with (default: curate/params.yaml score.cleaners; "
                                                  "loss / unlearning need a trained baseline separator)")
    sp.add_argument("--format", choices=("msst-type1", "msst-type2", "msst-type3", "csv"),
                    help="export format (default: curate/params.yaml export.format)")
    sp.add_argument("--workspace", default="curate", help="the curate pipeline's folder (default: curate)")
    sp.set_defaults(func=_curate)
    sp = sub.add_parser("detection", help="every cleaner's detection per contamination preset (`make detect`) -> metrics/detection/<preset>.json")
    sp.set_defaults(func=_detection)
    sp = sub.add_parser("evidence", help="Table 1/2: the evidence.scale grid as DVC experiments -> metrics/evidence.json")
    sp.add_argument("--scale", help="a key of evidence.scales (default: evidence.scale)")
    sp.add_argument("--collect-only", action="store_true", help="only read the finished experiments back")
    sp.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    sp.set_defaults(func=_evidence)
    sp = sub.add_parser("gc", help="remove the temp folders killed stage runs left (dvc repro's run-cache restores "
                                   "outputs without running the stage that would clear them); live writers' are kept")
    sp.add_argument("folders", nargs="*", default=["data", "models", "metrics", "reports"],
                    help="output folders to scan (default: data models metrics reports)")
    sp.set_defaults(func=_gc)
    sp = sub.add_parser("sweep", help="collect a cleaner x keep-ratio sweep from `dvc exp show` into metrics/sweep*.csv")
    sp.set_defaults(func=_sweep)
    sp = sub.add_parser("query", help="run SQL against the catalogue (or the README's example queries)")
    sp.add_argument("sql", nargs="?", help="SQL text")
    sp.add_argument("--db", default="data/catalogue.duckdb")
    sp.add_argument("--examples", action="store_true", help="run the README's example queries")
    sp.add_argument("--rows", type=int, default=20, help="rows to print per query (default 20)")
    sp.set_defaults(func=_query)
    return ap


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `stemsift query ... | head` ends quietly
    args = build_parser().parse_args(argv)
    warnings.formatwarning = lambda msg, cat, *a, **k: f"stemsift {args.command}: warning: {msg}\n"
    try:
        args.func(args)
    except (StemSetError, ParamsError, AudioError, OSError, ValueError, KeyError) as e:
        print(f"stemsift {args.command}: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
