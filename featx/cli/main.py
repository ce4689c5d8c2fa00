"""The click group behind the ``featx`` command."""
from __future__ import annotations

import click

from featx.cli.common import setup_logging
from featx.cli.demo import demo_cmd
from featx.cli.extract import extract_cmd
from featx.cli.info import info_cmd
from featx.cli.fit import fit_cmd
from featx.cli.predict import predict_cmd
from featx.cli.compare import compare_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="More messages.")
@click.version_option(package_name="featx")
def main(verbose):
    """featx: frozen pretrained CNN and handcrafted features, cached in HDF5, with classical heads."""
    setup_logging(verbose=verbose)


main.add_command(demo_cmd)
main.add_command(extract_cmd)
main.add_command(info_cmd)
main.add_command(fit_cmd)
main.add_command(predict_cmd)
main.add_command(compare_cmd)


if __name__ == "__main__":
    main()
