"""The one parser style of every ``ae-ot`` command.

``ae-ot fit|validate|test`` is Lightning's CLI, built on jsonargparse; the other commands use
jsonargparse's ``ArgumentParser`` too (a drop-in for argparse), so every command has
``--config FILE.yaml`` (options from a file, command-line options after it win),
``--print_config`` (the resolved options as YAML, a file ``--config`` reads back) and ``--help``,
and every command reports a bad option value as one line.
"""

from __future__ import annotations

import argparse
import re
import sys

from jsonargparse import ActionConfigFile, ArgumentParser, DefaultHelpFormatter

__all__ = ["CommandParser", "command_parser", "concise_parser_message"]


def concise_parser_message(message: str) -> str:
    """The one relevant line of a jsonargparse error: the dotted key path of the first failing
    value and what was wrong with it.

    jsonargparse reports a bad nested value as a tree (``Parser key "model":`` / ``Does not
    validate against any of the Union subtypes`` / ``- Problem with given class_path ...`` /
    ``Parser key "latent_dim":`` / ``Expected a <class 'int'>. Got value: abc``); the first
    branch holds the user's mistake, the others (``NoneType``, the value's type) are noise.
    """
    keys, detail = [], None
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in lines:
        match = re.match(r'^(?:- )?Parser key "([^"]+)":?\s*(.*)$', line)
        if match:
            keys.append(match.group(1))
            if match.group(2):
                detail = match.group(2)
                break
            continue
        if keys and not line.startswith(("Does not validate", "Subtypes:", "Errors:", "- Problem with given")):
            detail = line.lstrip("- ")
            break
    if not keys or not detail:
        return lines[0] if len(lines) == 1 else " ".join(lines[:2])
    given = next((line[len("Given value: "):] for line in lines if line.startswith("Given value: ")), None)
    if keys in (["model"], ["data"]) and given and "import path" in message:
        return f"{keys[0]}: {given!r} is not a class of the zoo; choose one of {', '.join(zoo_classes(keys[0]))}"
    return f"{'.'.join(keys)}: {detail}"


def zoo_classes(kind: str) -> list[str]:
    """Class names ``--model`` (the generators) or ``--data`` (the DataModules) accepts."""
    import pytorch_lightning as pl

    import ae_ot.data
    import ae_ot.generators
    from ae_ot.generators.base import GenerativeModel

    module, base = (ae_ot.generators, GenerativeModel) if kind == "model" else (ae_ot.data, pl.LightningDataModule)
    return sorted(name for name in module.__all__
                  if isinstance(getattr(module, name), type) and issubclass(getattr(module, name), base)
                  and getattr(module, name) is not base and not name.startswith("_"))


class CommandParser(ArgumentParser):
    """jsonargparse's parser with one-line errors (:func:`concise_parser_message`) instead of the
    usage and jsonargparse's tree of Union subtypes; exit status 2, as argparse."""

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:  # parsing one member of a Union: jsonargparse catches this
            return super().error(message, ex)
        prog = self.prog.replace(" [options]", "")
        sys.stderr.write(f"{prog}: error: {concise_parser_message(message)}\n(`{prog} --help` lists the options)\n")
        sys.exit(2)


class RawDescriptionFormatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """jsonargparse's help, with the description printed as written (the commands' docstrings hold
    example command lines)."""


def command_parser(prog: str, description: str | None = None, **kwargs) -> CommandParser:
    """The parser of ``ae-ot <command>``: ``--config`` first, then the command's own options."""
    kwargs.setdefault("formatter_class", RawDescriptionFormatter)
    parser = CommandParser(prog=prog, description=description, **kwargs)
    parser.add_argument("--config", action=ActionConfigFile,
                        help="a YAML file of these options (`--print_config` writes one); later options override it")
    return parser
