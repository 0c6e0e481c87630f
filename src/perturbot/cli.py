"""Command line: ``perturbot predict`` applies a trained model to new control cells;
``perturbot progress`` shows how far the training jobs under a results directory are."""

from __future__ import annotations

import argparse
import sys

from perturbot import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="perturbot", description=__doc__)
    parser.add_argument("--version", action="version", version=f"perturbot {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="predict perturbed cells from control cells with a trained model")
    p.add_argument("--model", required=True, help="model directory, e.g. results/<exp>/models/all/cellot/<drug>")
    p.add_argument("--input", required=True, help=".h5ad of control cells (raw counts if the model was trained on counts)")
    p.add_argument("--output", required=True, help=".h5ad to write the predicted cells to")
    p.add_argument("--perturbation", help="which perturbation (needed for models trained on several)")
    p.add_argument("--layer", help="read this layer instead of X")
    p.add_argument("--threads", type=int, default=1)
    q = sub.add_parser("progress", help="percent done, time left and best validation score of training jobs")
    q.add_argument("results", nargs="?", default="results", help="results directory (default: results)")
    q.add_argument("--all", action="store_true", help="also list finished jobs")
    args = parser.parse_args(argv)
    if args.command == "progress":
        return _progress(args.results, args.all)

    from perturbot.errors import ClearError
    from perturbot.predict import predict_file
    from perturbot.training import set_threads

    set_threads(args.threads)
    try:
        out = predict_file(args.input, args.model, args.output, perturbation=args.perturbation, layer=args.layer)
    except (ClearError, FileNotFoundError) as err:  # anything else is a bug and keeps its traceback
        print(f"perturbot predict: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out.n_obs} predicted cells x {out.n_vars} features to {args.output}")
    return 0


def _progress(results: str, include_done: bool) -> int:
    from perturbot.progress import format_jobs, training_jobs

    try:
        jobs = training_jobs(results, include_done=include_done)
    except FileNotFoundError as err:
        print(f"perturbot progress: error: {err}", file=sys.stderr)
        return 2
    print(format_jobs(jobs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
