"""``cellblock export``: export architectures (JSON, PyTorch, TorchScript, ONNX), verified."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cellblock.cli.common import _key_value, command
from cellblock.core.errors import ConfigError


# ---- command line ------------------------------------------------------------------------
@command("export")
def _add_export(sub: Any) -> None:
    from cellblock.export.formats import FORMATS

    p = sub.add_parser("export",
                       help="export architectures (JSON, PyTorch source, TorchScript, ONNX), "
                            "verified")
    p.add_argument("run", nargs="?", help="run directory (or use --arch)")
    pick = p.add_mutually_exclusive_group()
    pick.add_argument("--trial", type=int, help="trial number")
    pick.add_argument("--pareto", action="store_true", help="every Pareto-optimal trial")
    pick.add_argument("--knee", action="store_true", help="the knee point of the Pareto front")
    p.add_argument("--max-latency-ms", dest="max_latency_ms",
                   help="only trials with latency_ms <= X")
    p.add_argument("--max-macs", dest="max_macs", help="only trials with macs <= X (e.g. 2M)")
    p.add_argument("--max-params", dest="max_params",
                   help="only trials with params <= X (e.g. 100k)")
    p.add_argument("--arch", help="export this arch JSON instead of a run's trial")
    p.add_argument("--space", help="space of --arch (name, module:function or file.py:function)")
    p.add_argument("--space-arg", action="append", type=_key_value, metavar="KEY=VALUE",
                   help="skeleton option of --space, repeatable (YAML values)")
    p.add_argument("--format", help="comma-separated formats of " + ", ".join(FORMATS.names())
                   + " (default: every one whose packages are installed; onnx needs "
                   "pip install 'cellblock[onnx]')")
    p.add_argument("--out", required=True, help="output directory (new or empty; see --force)")
    p.add_argument("--force", action="store_true",
                   help="replace an earlier export in --out as a whole (only a directory "
                   "'cellblock export' wrote, holding nothing else)")
    p.add_argument("--supernet", help="export with weights inherited from this supernet checkpoint")
    p.add_argument("--allow-changed-inputs", dest="allow_changed_inputs", action="store_true",
                   help="go on although the dataset, space file, table or supernet changed since "
                        "the search (as 'search --allow-changed-inputs')")
    p.set_defaults(func=_export)


def _export(args: Any) -> int:
    from cellblock.export.exporter import export_items
    from cellblock.export.formats import FORMATS, available_formats, check_formats
    from cellblock.export.selection import (
        item_from_arch_file,
        items_from_run,
        parse_filters,
        select_trials,
    )
    from cellblock.pareto.results import load_run

    if args.format is None:
        formats = available_formats()
        skipped = sorted(set(FORMATS.names()) - set(formats))
        if skipped:
            print(f"note: skipping {', '.join(skipped)} (not installed: pip install "
                  "'cellblock[onnx]', or choose with --format)")
    else:
        formats = [f.strip() for f in args.format.split(",") if f.strip()]
    if not formats:
        raise ConfigError("--format is empty; give e.g. json,pytorch,torchscript,onnx")
    check_formats(formats)
    from cellblock.export.outdir import check_export_out

    check_export_out(Path(args.out), args.force, args.run)  # before anything is read or written
    filters = parse_filters(args.max_latency_ms, args.max_macs, args.max_params)
    if args.arch:
        if args.run or args.trial is not None or args.pareto or args.knee or filters:
            raise ConfigError(
                "--arch exports one architecture; do not combine it with RUN or trial selection")
        items = [item_from_arch_file(args.arch, args.space, dict(args.space_arg or []))]
    else:
        if not args.run:
            raise ConfigError("give a run directory (or --arch FILE --space NAME)")
        from cellblock.run.fingerprint import check_recorded_inputs

        data = load_run(args.run)
        check_recorded_inputs(data, args.allow_changed_inputs, "export")
        trials = select_trials(data, trial=args.trial, pareto=args.pareto, knee=args.knee,
                               filters=filters)
        items = items_from_run(args.run, trials)
    if args.supernet:
        from cellblock.supernet.inherit import attach_supernet_weights

        attach_supernet_weights(items, args.supernet)
    print(f"exporting {len(items)} architecture(s) as {', '.join(formats)} to {args.out}, each "
          "verified by a round trip in a clean interpreter...", flush=True)
    try:
        report = export_items(items, args.out, formats, force=args.force, run_dir=args.run)
    finally:
        _print_report(Path(args.out) / "roundtrip.json")
    print(f"all round trips passed; written to {args.out} ({len(report['exports'])} "
          "architecture(s))")
    untrained = [e for e in report["exports"]
                 if e.get("trial") is not None and str(e["weights"]).startswith("untrained")]
    for e in untrained:
        print(f"note: {e['label']} has search-time weights only ({e['weights']}); for trained ones "
              "run "
              f"'cellblock train {args.run} --trial {e['trial']} --epochs 30', then export again")
    return 0


def _print_report(path: Path) -> None:
    from cellblock.export.exporter import OK_KEYS

    if not path.is_file():
        return
    report = json.loads(path.read_text(encoding="utf-8"))
    for e in report["exports"]:
        print(f"{e['label']}: arch {e['arch_id']}  params {e['params']:,}  macs {e['macs']:,}  "
              f"weights: {e['weights']}")
        for f, r in e["formats"].items():
            if "error" in r:
                print(f"  {f:<12} ERROR {r['error']}")
                continue
            ok = all(r.get(k) is not False for k in OK_KEYS)
            print(f"  {f:<12} {'ok  ' if ok else 'FAIL'} params {r['params']}  macs {r['macs']}  "
                  f"max|diff| {r['max_abs_diff']:.2e}")
