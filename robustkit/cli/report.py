"""``robustkit report DIR``: write DIR/index.html from a sweep output folder, print its path."""
from __future__ import annotations

from pathlib import Path

import click

from robustkit.cli.usage import emit_json


def register(main: click.Group) -> None:
    """Attach ``report`` to the ``robustkit`` group."""
    main.add_command(report_cmd)


@click.command("report")
@click.argument("out_dir", metavar="DIR",
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--open-path", is_flag=True,
              help="Print a file:// URI to paste into a browser instead of the plain path.")
@click.option("--json", "as_json", is_flag=True, help="Print {path, uri, bytes} as JSON.")
def report_cmd(out_dir: Path, open_path: bool, as_json: bool) -> None:
    """Build DIR/index.html (one self-contained file) from DIR/results.csv, run.json, artifacts/.

    Example: robustkit report reports/digits
    """
    from robustkit import report

    if not (out_dir / "results.csv").is_file():
        # Without it, any folder (a home directory, a source tree) would get an index.html.
        raise click.BadParameter(f"{out_dir} holds no results.csv: not a sweep output folder",
                                 param_hint="DIR")
    path = report.build(out_dir)
    uri = path.resolve().as_uri()
    if as_json:
        emit_json({"path": str(path), "uri": uri, "bytes": path.stat().st_size})
    else:
        click.echo(uri if open_path else str(path))
