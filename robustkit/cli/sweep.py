"""``robustkit sweep SPEC [SPEC...]``: run (or list, with --dry-run) a grid from TOML specs."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from robustkit.cli.usage import emit_json, fail
from robustkit.dask_address import check_dask_address

DEMO_SPECS = ("attacks/digits.toml", "defenses/digits.toml")
DEMO_OUT = "reports/demo"


def register(main: click.Group) -> None:
    """Attach the ``sweep`` and ``demo`` commands to the ``robustkit`` group."""
    main.add_command(sweep)
    main.add_command(demo)


def default_out(specs: list) -> Path:
    """``reports/<name>``: the specs' common name, else their common file stem (as for
    ``attacks/digits.toml defenses/digits.toml``), else their names joined by ``+``."""
    names = list(dict.fromkeys(s.name for s in specs))
    stems = list(dict.fromkeys(Path(s.path).stem for s in specs))
    if len(names) == 1:
        folder = names[0]
    else:
        folder = stems[0] if len(stems) == 1 else "+".join(names)
    # Spec names are checked at parsing; a file stem such as "..", or a name that only
    # looks like a path, must still never lead out of reports/.
    if folder in ("", ".", "..") or folder.startswith(".") or "/" in folder or "\\" in folder:
        raise click.UsageError(f"cannot derive an output folder under reports/ from "
                               f"{folder!r}; give one with --out")
    return Path("reports") / folder


def _dask_address(value: str | None) -> str | None:
    """A malformed ``--dask`` address is a usage error (exit 2), found before connecting."""
    if value is None:
        return None
    try:
        return str(check_dask_address(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--dask") from None


@click.command("sweep")
@click.argument("specs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Output folder (default reports/<spec name>).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Run cells in N local processes (0 or 1: in this process). "
                   "Default: one per CPU.")
@click.option("--dask", "dask_address", metavar="ADDRESS", default=None,
              callback=lambda ctx, param, value: _dask_address(value),
              help="Submit cells to a Dask distributed scheduler, e.g. tcp://host:8786.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Torch threads per task (default 1). Rows are identical across "
                   "executors with the same value.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True, help="Device for training and attacks (auto: CUDA when "
              "available).")
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="Folder with file-based datasets (default $ROBUSTKIT_DATA).")
@click.option("--models-dir", type=click.Path(file_okay=False), default=None,
              help="Model store shared between sweeps (default <out>/models).")
@click.option("--workdir", type=click.Path(file_okay=False), default="runs", show_default=True,
              help="Workspace of the models specs name with stored = \"NAME\" (trained, "
                   "defended or imported ones, as for `robustkit attack --workdir`).")
@click.option("--dry-run", is_flag=True, help="Validate, list the cells and an estimated cost.")
@click.option("--retry-errors", is_flag=True, help="Run cells that failed before again.")
@click.option("--no-report", is_flag=True, help="Do not build index.html at the end.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
def sweep(specs: tuple[str, ...], out: str | None, workers: int | None,
          dask_address: str | None,
          threads: int | None, device: str, data_root: str | None, models_dir: str | None,
          workdir: str, dry_run: bool, retry_errors: bool, no_report: bool,
          as_json: bool) -> None:
    """Run the grid of one or more TOML SPECs; finished cells are skipped on a rerun.

    Each finished cell is appended to OUT/results.csv at once; OUT/index.html is built
    at the end. Invalid specs stop everything before it starts (exit code 2).

    \b
    Example:
        robustkit sweep attacks/digits.toml defenses/digits.toml --workers 2
    """
    from robustkit.sweep import SpecError, load_spec, run_sweep, validate
    from robustkit.sweep.stored import resolved

    if workers is not None and workers > 1 and dask_address:
        raise click.UsageError("give either --workers N or --dask ADDRESS, not both")
    if workers is None:
        workers = 0 if dask_address else min(os.cpu_count() or 1, 8)
    try:
        parsed = [load_spec(p) for p in specs]
        # --dry-run lists the grid also before its data is there (a note says what is missing)
        validate(parsed, data_root=data_root, data=not dry_run, workdir=workdir)
        parsed = resolved(parsed, workdir)
    except SpecError as exc:
        if as_json:
            from robustkit.cli.usage import emit_error

            emit_error(str(exc), "usage", problems=exc.problems)
            click.echo(str(exc), err=True)
            sys.exit(2)
        raise click.UsageError(str(exc)) from None
    out_dir = Path(out) if out else default_out(parsed)
    if dry_run:
        _dry_run(parsed, out_dir, data_root, as_json)
        return
    summary = run_sweep(parsed, out_dir, workers=workers, dask=dask_address, device=device,
                        data_root=data_root, models_dir=models_dir, retry_errors=retry_errors,
                        threads=threads, report=not no_report, progress=True, command=sys.argv,
                        validate=False, workdir=workdir)
    failed = _failed_cells(parsed, Path(summary.out_dir))
    if as_json:
        emit_json(vars(summary))
    else:
        # With failed cells the summary goes to stderr, beside the error line.
        err = bool(failed)
        click.echo(f"{summary.run} cells run ({summary.errors} with errors), "
                   f"{summary.skipped} already done, {summary.models_trained} models trained, "
                   f"{summary.seconds:.1f} s -> {Path(summary.out_dir) / 'results.csv'}",
                   err=err)
        if summary.stale:
            click.echo(f"note: {summary.stale} rows of {summary.out_dir}/results.csv belong to "
                       f"cells no longer in these specs (and appear in the report); use a "
                       f"new --out for a clean run", err=err)
        if summary.report:
            click.echo(f"report: {summary.report}", err=err)
    if summary.report_error:
        fail(f"report not built: {summary.report_error}")
    if failed:
        earlier = failed - summary.errors if failed > summary.errors else 0
        fail(f"{failed} cells ended with errors (status=error rows in "
             f"{Path(summary.out_dir) / 'results.csv'}"
             + (f"; {earlier} from an earlier run" if earlier else "")
             + "); fix the cause and rerun with --retry-errors")


def _failed_cells(parsed: list, out_dir: Path) -> int:
    """How many cells of these specs have an error row in ``out_dir/results.csv``."""
    from robustkit.sweep import expand
    from robustkit.sweep.results import read_rows

    ids = {c.cell_id for c in expand(parsed)}
    return len({r["cell_id"] for r in read_rows(out_dir / "results.csv")
                if r.get("status") == "error" and r.get("cell_id") in ids})


def _dry_run(parsed: list, out_dir: Path, data_root: str | None, as_json: bool) -> None:
    """List the cells, which of them ``out_dir/results.csv`` holds already, and a cost
    estimate of the remaining ones; a missing dataset is a note, not an error."""
    from robustkit.sweep import estimate, expand
    from robustkit.sweep.results import done_keys, eps_key, read_rows
    from robustkit.sweep.validate import data_problems

    cells = expand(parsed)
    done = done_keys(read_rows(out_dir / "results.csv"))
    finished = {c.cell_id: [e for e in c.eps if (c.cell_id, eps_key(e)) in done]
                for c in cells}
    remaining = [c for c in cells if len(finished[c.cell_id]) < len(c.eps)]
    est = estimate(remaining)
    notes = data_problems(parsed, data_root=data_root)
    n_done = len(cells) - len(remaining)
    if as_json:
        emit_json({"out": str(out_dir), **est, "total_cells": len(cells),
                   "finished_cells": n_done, "remaining_cells": len(remaining),
                   "data_problems": notes,
                   "cells_list": [{"cell_id": c.cell_id, "label": c.label,
                                   "eps": list(c.eps), "eps_done": finished[c.cell_id],
                                   "finished": len(finished[c.cell_id]) == len(c.eps)}
                                  for c in cells]})
        return
    for c in cells:
        k = len(finished[c.cell_id])
        state = "done" if k == len(c.eps) else "todo" if k == 0 else f"{k}/{len(c.eps)} eps done"
        click.echo(f"{c.cell_id}  {c.label}  eps={','.join(f'{e:g}' for e in c.eps)}  [{state}]")
    total = estimate(cells)
    click.echo(f"{total['cells']} cells, {total['rows']} rows, {total['models']} models; "
               f"{n_done} finished, {len(remaining)} remaining; estimated {est['seconds']:.0f} s "
               f"for the remaining ones on this CPU with one worker (training "
               f"{est['train_seconds']:.0f} s); output {out_dir}")
    for note in notes:
        click.echo(f"note: {note}", err=True)


def demo_specs() -> list[str]:
    """The demo's spec files, from the clone robustkit runs from (relative to the current
    folder when they are below it, as ``make demo`` names them)."""
    root = Path(__file__).resolve().parents[2]
    paths = [root / p for p in DEMO_SPECS]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"the demo specs are not there ({', '.join(missing)}); `robustkit demo` runs "
            f"from a clone of the robustkit repository; elsewhere run `robustkit sweep "
            f"SPEC.toml` with specs of your own")
    cwd = Path.cwd().resolve()
    return [str(p.relative_to(cwd)) if p.is_relative_to(cwd) else str(p) for p in paths]


def _demo(ctx: click.Context, /, **kw: object) -> None:
    ctx.invoke(sweep, specs=tuple(demo_specs()), **kw)


# `robustkit demo` is `robustkit sweep attacks/digits.toml defenses/digits.toml --out
# reports/demo` (what `make demo` runs), with the same options.
demo = click.Command(
    "demo", callback=click.pass_context(_demo),
    params=[click.Option(["--out"], type=click.Path(file_okay=False), default=DEMO_OUT,
                         show_default=True, help="Output folder.")
            if p.name == "out" else p for p in sweep.params if p.name != "specs"],
    help="Run the demo: the attack and defense sweeps on the built-in digits data "
         f"({' + '.join(DEMO_SPECS)}) into {DEMO_OUT}, then its HTML report; a rerun "
         "skips finished cells.",
    context_settings={"help_option_names": ["-h", "--help"]})
