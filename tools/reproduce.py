"""Run every row of the paper's Tables 1 and 2 on one corpus and tabulate WA and UA.

    python tools/reproduce.py --data emodb --epochs 100                 # all rows, hours on a CPU
    python tools/reproduce.py --rows t1-ilt-attention,t2-cat-both --epochs 5 --folds 1

Each row is one ``python -m minser.train`` run in ``<out>/<row>/`` (a row whose network and options equal an
earlier row's, such as Table 2's CNN-Transformer and Table 1's baseline 1 with PE, shares that run). A row whose
``results.json`` already has the requested epochs and folds is skipped (a row folder that holds a run
of other settings, such as another ``--classes`` or ``--train-arg``, is refused); a row that was
interrupted is resumed (``--resume``) from its last completed epoch; so re-running the command
continues where it stopped, and re-running with more ``--epochs`` extends every row. The table
(``<out>/results.md``, rewritten atomically after every row) gives WA and UA as mean ± standard
deviation over folds (percent), with the epochs and protocol actually run.

``--members K`` makes every row an ensemble of K runs that differ only in their seed: the row's run
(``--seed S``) and ``<out>/<row>.seed-<S+k>`` (``--seed S+k --split-seed S``, k = 1 .. K-1), which share
its test folds. The row's WA and UA are then the ensemble's (``python -m minser.evaluate`` over the
K runs), and the table also gives each member's UA alone.

The rows follow minser.models' reading of the paper (README "Models"; Table 1: baseline 1 with
and without positional encoding, baseline 2 and ILT with each fusion; Table 2: CNN-Transformer, LSTM-Transformer, CNN+LSTM and CAT with each branch
set). The paper's own figures are not reproduced here: we could not source them, and
we do not type in numbers we cannot cite.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from minser.files import atomic_write
from minser.errors import INTERRUPTED_STATUS, MinserError
from minser.evaluate import evaluate
from minser.train import HelpFormatter, TrainConfig, build_parser, given_settings, parse_args, settings_difference
from minser.train import main as train


@dataclass(frozen=True)
class Row:
    """One table row: an id, the table it belongs to, a label, the model and its options."""

    id: str
    table: int
    label: str
    model: str
    options: dict[str, Any] = field(default_factory=dict)

    def arguments(self) -> list[str]:
        return ["--model", self.model, *(f"--model-opt={k}={json.dumps(v)}" for k, v in self.options.items())]


ROWS = (
    Row("t1-cnn-transformer-nope", 1, "Baseline 1: CNN-Transformer without PE", "cnn_transformer", {"pe": False}),
    Row("t1-cnn-transformer", 1, "Baseline 1: CNN-Transformer with PE", "cnn_transformer"),
    Row("t1-cnn-lstm-transformer", 1, "Baseline 2: CNN-BiLSTM-Transformer", "cnn_lstm_transformer"),
    Row("t1-ilt-concat", 1, "ILT, concatenation fusion", "ilt", {"fusion": "concat"}),
    Row("t1-ilt-plus", 1, "ILT, plus fusion (alpha 0.5)", "ilt", {"fusion": "plus", "alpha": 0.5}),
    Row("t1-ilt-attention", 1, "ILT, attention fusion", "ilt", {"fusion": "attention"}),
    Row("t2-cnn-transformer", 2, "CNN-Transformer", "cnn_transformer"),
    Row("t2-lstm-transformer", 2, "LSTM-Transformer", "lstm_transformer"),
    Row("t2-cnn-plus-lstm", 2, "CNN+LSTM", "cnn_plus_lstm"),
    Row("t2-cat-c2l", 2, "CAT, CNN->LSTM only", "cat", {"branches": "c2l"}),
    Row("t2-cat-l2c", 2, "CAT, LSTM->CNN only", "cat", {"branches": "l2c"}),
    Row("t2-cat-both", 2, "CAT, both branches", "cat", {"branches": "both"}),
)


def finished(folder: Path, config: TrainConfig) -> dict[str, Any] | None:
    """The results of the run in ``folder`` when it is ``config``'s run complete, None when it has not run or
    not to the end of ``config``'s epochs and folds (it is then resumed). MinserError when ``folder`` holds
    a run of other settings (another --classes, --protocol, --train-arg, ...): its results are not this
    command's."""
    config_path, results_path = folder / "config.json", folder / "results.json"
    if not config_path.is_file():
        return None
    saved = json.loads(config_path.read_text())
    difference = settings_difference(config, saved, f"the run in {folder}")
    if difference is not None:
        raise MinserError(f"{difference}; give another --out, or remove {folder} to train it anew")
    # config.json is rewritten when a run starts, results.json when it ends: an older results.json belongs
    # to an earlier, shorter run that a resume was extending.
    if (not results_path.is_file() or saved.get("epochs") != config.epochs or saved.get("folds") != config.folds
            or results_path.stat().st_mtime_ns < config_path.stat().st_mtime_ns):
        return None
    return json.loads(results_path.read_text())


def table(rows: list[tuple[Row, dict[str, Any]]], args: argparse.Namespace) -> str:
    """The markdown table of finished rows."""
    ensemble = args.members > 1
    lines = [f"# Tables 1 and 2 on `{args.data}`" + (f" ({args.classes} classes)" if args.classes else ""), "",
             f"Protocol `{args.protocol}`, {args.epochs} epochs per fold, seed {args.seed}; WA and UA in percent, "
             "mean ± standard deviation (ddof=0) over the folds run"
             + (f", of ensembles of {args.members} runs (seeds {args.seed} to {args.seed + args.members - 1}, "
                f"splits of seed {args.seed})" if ensemble else "")
             + ". Written by `tools/reproduce.py`"
             + (f"; every run also had `{' '.join(args.train_arg)}`." if args.train_arg else "."), "",
             "| row | table | network | folds | WA | UA |" + (" UA of each member |" if ensemble else ""),
             "|---|---|---|---|---|---|" + ("---|" if ensemble else "")]
    for row, r in rows:
        members = f" {' / '.join(f'{ua:.2f}' for ua in r['member_ua'])} |" if ensemble else ""
        lines.append(f"| {row.id} | {row.table} | {row.label} | {len(r['folds'])} | "
                     f"{r['wa']:.2f} ± {r['wa_std']:.2f} | {r['ua']:.2f} ± {r['ua_std']:.2f} |{members}")
    return "\n".join(lines) + "\n"


def run_arguments(row: Row, folder: Path, seed: int, split_seed: int | None, args: argparse.Namespace) -> list[str]:
    """The minser.train arguments this tool gives one run of ``row`` (``--train-arg``'s come after them; an
    interrupted run also gets ``--resume``)."""
    return [*row.arguments(), "--data", args.data, *(["--classes", str(args.classes)] if args.classes else []),
            "--protocol", args.protocol, "--epochs", str(args.epochs), "--seed", str(seed), "--out", str(folder),
            *(["--split-seed", str(split_seed)] if split_seed is not None else []),
            *(["--folds", str(args.folds)] if args.folds is not None else [])]


# What to give instead of a setting this tool gives the runs, where it is not its own option of that name.
ROW_SETTING = "each row sets its network and its options: pick other rows with --rows"
INSTEAD = {"model": ROW_SETTING, "split_seed": "give --seed and --members instead (the members share the splits "
           "of --seed)", "resume": "leave it out: rerunning this command resumes an interrupted row"}


def overridden_setting(args: argparse.Namespace, rows: Sequence[Row]) -> str | None:
    """Why ``args.train_arg`` is refused, None when it is not: it gives a setting this tool gives the runs of
    ``rows`` (the rows asked for) itself, which it would silently override (results.md would state the tool's)."""
    # Each row's run with the optional settings given, so that theirs count too; run_once adds --resume.
    probe = argparse.Namespace(**{**vars(args), "classes": 4, "folds": 1})
    own = {name for row in rows for name, _ in
           given_settings([*run_arguments(row, Path(args.out), args.seed, args.seed, probe), "--resume"])}
    for name, option in given_settings(args.train_arg):
        if name in own:
            advice = INSTEAD.get(name) or (f"give this tool's --{name} instead" if name in vars(args) else ROW_SETTING)
            return f"--train-arg gives minser.train's {option}, which this tool sets itself for the rows run; {advice}"
    return None


def run_once(row: Row, folder: Path, seed: int, split_seed: int | None, args: argparse.Namespace) -> dict[str, Any]:
    """The results of one run of ``row``: read when finished, else trained (resumed when interrupted)."""
    common = [*run_arguments(row, folder, seed, split_seed, args), *args.train_arg]
    if (results := finished(folder, parse_args(common))) is not None:
        print(f"== {folder.name}: finished earlier, skipped", flush=True)
        return results
    print(f"== {folder.name}: {row.label}" + (f", seed {seed}" if split_seed is not None else ""), flush=True)
    return train(common + (["--resume"] if (folder / "config.json").is_file() else []))


def run_row(row: Row, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """A row's results: its run's, or with ``--members K`` the ensemble's, with ``member_ua``."""
    results = run_once(row, out / row.id, args.seed, None, args)
    if args.members == 1:
        return results
    folders = [out / row.id, *(out / f"{row.id}.seed-{args.seed + k}" for k in range(1, args.members))]
    member_ua = [results["ua"]] + [run_once(row, folder, args.seed + k, args.seed, args)["ua"]
                                   for k, folder in enumerate(folders[1:], start=1)]
    cache_dir = build_parser().parse_known_args(args.train_arg)[0].cache_dir
    return {**evaluate(folders, cache_dir=cache_dir), "member_ua": member_ua}


def interrupted(row: Row, prog: str, argv: list[str]) -> str:
    """The line Ctrl-C in ``row`` prints. minser.train's own (RunInterrupted's) advises ``python -m minser.train
    --resume`` for the one run it was in; rerunning this command is what continues it and every row after it."""
    return (f"interrupted in row {row.id}; to continue, rerun the same command: {prog} {shlex.join(argv)} "
            "(the runs finished earlier are reused, the interrupted one resumes from its last completed epoch)")


def row_results(row: Row, done: list[tuple[Row, dict[str, Any]]], out: Path, args: argparse.Namespace
                ) -> dict[str, Any]:
    """The results of ``row``: those of a row in ``done`` with the same network (CNN-Transformer is in both
    tables: one run serves both rows), else :func:`run_row`'s."""
    twin = next(((r, res) for r, res in done if r.model == row.model and r.options == row.options), None)
    if twin is None:
        return run_row(row, out, args)
    print(f"== {row.id}: the same network as {twin[0].id}, whose results it shares", flush=True)
    return twin[1]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python tools/reproduce.py", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--rows", help=f"comma-separated row ids (default: all): {', '.join(r.id for r in ROWS)}")
    p.add_argument("--data", default="emodb", help="corpus: emodb, iemocap, a CSV manifest or a folder")
    p.add_argument("--classes", type=int, choices=(4, 7),
                   help="EmoDB classes: 4 or 7 (default: 4; a manifest or folder takes its classes from its labels)")
    # Not "all": it has no test part, so no WA/UA for the table (the row trained, then the table crashed).
    p.add_argument("--protocol", default="random", choices=("random", "speaker", "session"),
                   help="random, speaker or session (see minser.train)")
    p.add_argument("--epochs", type=int, default=100, help="epochs per fold")
    p.add_argument("--folds", type=int, help="run only the first N folds")
    p.add_argument("--seed", type=int, default=0, help="seed of every run (of the first member with --members)")
    p.add_argument("--members", type=int, default=1,
                   help="runs per row, seeds --seed, --seed+1, ... on the splits of --seed, scored as an ensemble")
    p.add_argument("--out", default="runs/reproduce", help="folder of the row runs and results.md")
    p.add_argument("--train-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for every minser.train run (repeatable), e.g. --train-arg=--pad-to=batch; "
                        "not one of the settings this tool gives the runs itself (refused)")
    args = p.parse_args(argv)
    by_id = {row.id: row for row in ROWS}
    # Tested for None: --rows "" (an unset shell variable) ran every row, hours of them.
    wanted = args.rows.split(",") if args.rows is not None else list(by_id)
    if not all(name.strip() for name in wanted):
        print(f"error: --rows {args.rows!r}: an empty row id; give comma-separated row ids from {', '.join(by_id)}, "
              "or leave --rows out to run them all", file=sys.stderr)
        return 2
    unknown = [name for name in wanted if name not in by_id]
    if unknown:
        print(f"error: unknown rows {unknown}; valid rows: {', '.join(by_id)}", file=sys.stderr)
        return 2
    if args.members < 1:
        print(f"error: --members {args.members}: give 1 (no ensemble) or more runs per row", file=sys.stderr)
        return 2
    if args.folds is not None and args.folds < 1:  # 0 was taken for "not given": every fold ran
        print(f"error: --folds {args.folds}: give an integer >= 1 (leave it out to run every fold)", file=sys.stderr)
        return 2
    if (refused := overridden_setting(args, [by_id[name] for name in wanted])) is not None:
        print(f"error: {refused}", file=sys.stderr)
        return 2
    out = Path(args.out)
    done: list[tuple[Row, dict[str, Any]]] = []
    row = by_id[wanted[0]]  # the row an error or a Ctrl-C names
    try:
        for row in (by_id[name] for name in wanted):
            done.append((row, row_results(row, done, out, args)))
            text = table(done, args)
            atomic_write(out / "results.md", lambda f: f.write(text), mode="w")
    except MinserError as exc:
        print(f"error: {row.id}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # RunInterrupted too: Ctrl-C in a row's training, its scoring or the table
        print(interrupted(row, p.prog, argv), file=sys.stderr)
        return INTERRUPTED_STATUS
    print(table(done, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
