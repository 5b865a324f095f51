"""Which dataset size gives every task a signal? Per task and generated dataset size: the
subtask counts its transitions reach once relabelled for the task (one level: a constant
reward, nothing for the critic to learn and H̄ cannot change the run) and its success
transitions (``tql.data.signal``). Each size is generated with OGBench's oracles into its own
folder (``DATA_DIR/EPISODESxLENGTH``): a run uses any dataset at least as large as it expects,
so sizes sharing a folder would be measured on the largest.

    python -m benchmarks.learning.data_signal --sizes 4x200,40x1001 --tasks all \\
        --json benchmarks/learning/results/data_signal.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks import common
from tql.data import expected_size, provide_task_data
from tql.data.datasets import load_task_data
from tql.data.signal import data_signal
from tql.tasks import resolve_tasks


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``4x200,40x1001`` -> [(episodes, episode length), ...]."""
    sizes = []
    for part in text.split(","):
        episodes, _, length = part.strip().partition("x")
        if not (episodes.isdigit() and length.isdigit()):
            raise SystemExit(f"--sizes: {part!r} is not EPISODESxLENGTH, e.g. 40x1001")
        sizes.append((int(episodes), int(length)))
    return sizes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="4x200,40x1001", help="EPISODESxLENGTH, comma list (smoke, cpu profiles)")
    parser.add_argument("--tasks", default="all")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--workers", type=int, default=1, help="processes generating a missing dataset")
    common.add_json_option(parser, "every (task, size)'s signal")
    args = parser.parse_args(argv)
    header = common.print_header(__file__, argv)
    console, sizes, tasks = Console(width=160), parse_sizes(args.sizes), resolve_tasks(args.tasks)
    rows, start = [], time.perf_counter()
    for task in tasks:
        for episodes, length in sizes:
            expect, folder = expected_size(task, episodes, length), Path(args.data_dir) / f"{episodes}x{length}"
            provide_task_data(task, folder, "generated", expect, True, console.print, progress=False,
                              workers=args.workers)
            data = load_task_data(task, folder, "generated", keep_info=True, expect=expect)
            assert (data.episodes, len(data.train["rewards"])) == (episodes, episodes * (length - 1)), folder
            signal = data_signal(task, data)
            rows.append({"task": task.name, "episodes": episodes, "episode_length": length, **signal.to_dict(),
                         "has_signal": signal.has_signal, "verdict": signal.verdict()})
    table = Table(title="each task's generated data, relabelled for it: subtask levels reached and success "
                        "transitions")
    table.add_column("task")
    for episodes, length in sizes:
        table.add_column(f"{episodes} x {length}", justify="right")
    for task in tasks:
        cells = [next(r for r in rows if r["task"] == task.name and (r["episodes"], r["episode_length"]) == size)
                 for size in sizes]
        table.add_row(task.name, *(f"levels {','.join(map(str, c['reward_levels']))}; {c['success_transitions']:,} "
                                   f"succ." + ("" if c["has_signal"] else " NONE") for c in cells))
    console.print(table)
    for episodes, length in sizes:
        silent = [r["task"] for r in rows if (r["episodes"], r["episode_length"]) == (episodes, length)
                  and not r["has_signal"]]
        console.print(f"{episodes} x {length}: {len(tasks) - len(silent)} of {len(tasks)} tasks have signal"
                      + (f"; none: {', '.join(silent)}" if silent else ""))
    console.print(f"{time.perf_counter() - start:.0f} s in all")
    common.write_json(args.json, {"args": vars(args), "rows": rows}, __file__, argv, header=header)


if __name__ == "__main__":
    main()
