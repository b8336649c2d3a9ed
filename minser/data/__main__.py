"""Command line for corpora: ``python -m minser.data {download,info} ...``.

- ``python -m minser.data download emodb [--dest DIR] [--url URL]``: fetch and verify EmoDB.
- ``python -m minser.data info SPEC [--classes 4|7]``: utterances per label and speakers of a corpus.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from minser.data.corpora import check_classes_option, load_corpus, shown_data_dir
from minser.data.download import DEFAULT_URL, download_emodb
from minser.errors import INTERRUPTED_STATUS, MinserError, broken_pipe_status, plain_warnings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minser.data", description="Download and inspect speech-emotion corpora."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    download = commands.add_parser(
        "download", help="download a corpus (EmoDB only: the others are licensed)",
        description="Download EmoDB (CC0-1.0), verify every wav file's SHA-256 and extract it to DEST/emodb.",
    )
    download.add_argument("corpus", choices=["emodb"], help="corpus to download")
    download.add_argument(
        "--dest", default=None,
        help=f"destination folder (default: $MINSER_DATA, else ~/.cache/minser; now {shown_data_dir()})",
    )
    download.add_argument("--url", default=DEFAULT_URL, help=f"archive address (default: {DEFAULT_URL})")
    info = commands.add_parser(
        "info", help="count a corpus' utterances per label and its speakers",
        description="Load a corpus and print its size, utterances per label and speakers.",
    )
    info.add_argument("spec", help="'emodb', 'iemocap' (under MINSER_DATA), a CSV manifest or a folder per label")
    info.add_argument("--classes", type=int, choices=[4, 7],
                      help="EmoDB class set (default: 4); a manifest or folder takes its classes from its labels")
    return parser


@plain_warnings()
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 on success, 2 on a minser error, as every minser command;
    130 on Ctrl-C and 141 when the reader of the output stopped early, as a shell reports SIGINT and SIGPIPE)."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "download":
            print(download_emodb(args.dest, args.url))
        else:
            check_classes_option(args.classes, args.spec, given_as="")
            corpus = load_corpus(args.spec, classes=4 if args.classes is None else args.classes)
            speakers = sorted(set(corpus.speakers()))
            print(f"{corpus.name}: {len(corpus)} utterances")
            for label, count in corpus.label_counts().items():
                print(f"  {label}: {count}")
            print(f"  speakers ({len(speakers)}): {' '.join(speakers)}")
        sys.stdout.flush()  # here, not at exit, so that a reader gone is caught below
    except MinserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return broken_pipe_status()
    except KeyboardInterrupt:
        # download_emodb removes its staging folder and the folders it created whatever stops it.
        print("interrupted; nothing of the download was kept: run the command again to download EmoDB"
              if args.command == "download" else "interrupted", file=sys.stderr)
        return INTERRUPTED_STATUS
    return 0


if __name__ == "__main__":
    sys.exit(main())
