"""The one parser style of every ``ae-ot`` command.

``ae-ot fit|validate|test`` is Lightning's CLI, built by jsonargparse from the signatures of the
model and the DataModule. Every other command is built the same way from one function's signature
(:func:`function_parser`): one option per parameter, its type and default from the signature, its
``--help`` from the ``Parameters`` section of the function's (numpydoc) docstring. So every command
has ``--config FILE.yaml`` (options from a file, command-line options after it win),
``--print_config`` (the resolved options as YAML, a file ``--config`` reads back) and ``--help``,
every command reports a bad option value as one line, and the command's ``main(argv)`` is
``run_function(build_parser(), the_function, argv)``: the same function can be called from Python.
"""

from __future__ import annotations

import argparse
import collections.abc
import inspect
import re
import shlex
import sys
import types
import typing
from typing import Any, Callable, Literal

from jsonargparse import ActionConfigFile, ArgumentParser, DefaultHelpFormatter

__all__ = ["CommandParser", "command_parser", "concise_parser_message", "function_parser", "run_function",
           "command_line", "option_docs"]


def concise_parser_message(message: str) -> str:
    """The one relevant line of a jsonargparse error: the dotted key path of the first failing
    value and what was wrong with it.

    jsonargparse reports a bad nested value as a tree (``Parser key "model":`` / ``Does not
    validate against any of the Union subtypes`` / ``- Problem with given class_path ...`` /
    ``Parser key "latent_dim":`` / ``Expected a <class 'int'>. Got value: abc``); the first
    branch holds the user's mistake, the others (``NoneType``, the value's type) are noise.

    Examples
    --------
    >>> concise_parser_message("Parser key 'num_samples': Expected a <class 'int'>. Got value: abc")
    "Parser key 'num_samples': Expected a <class 'int'>. Got value: abc"
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
    if given is not None and "Literal[" in detail and "Got value" not in detail:
        # an optional Literal (``--real bad``) says what it expected but not what it got
        detail = f"{detail}. Got value: {given}"
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


# --------------------------------------------------------------------------------------------
# A command's parser from its function's signature
# --------------------------------------------------------------------------------------------
def option_docs(function: Callable) -> dict[str, str]:
    """The ``Parameters`` section of ``function``'s numpydoc docstring: name -> description.

    Examples
    --------
    >>> def f(n: int = 1):
    ...     '''Parameters
    ...     ----------
    ...     n : int
    ...         How many.
    ...     '''
    >>> option_docs(f)
    {'n': 'How many.'}
    """
    import docstring_parser  # installed with jsonargparse[signatures], which reads the same docstrings

    parsed = docstring_parser.parse(inspect.getdoc(function) or "", style=docstring_parser.DocstringStyle.NUMPYDOC)
    return {param.arg_name: " ".join((param.description or "").split()) for param in parsed.params}


def command_options(function: Callable) -> list[inspect.Parameter]:
    """The parameters of ``function`` that are command-line options: those before ``*``. The
    keyword-only ones are for callers from Python (a test's small classifier, say)."""
    return [param for param in inspect.signature(function).parameters.values() if param.kind is param.POSITIONAL_OR_KEYWORD]


def _without_none(hint):
    """``X`` for ``X | None`` (and ``Optional[X]``), else ``hint``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def argparse_keywords(param: inspect.Parameter, hint) -> dict[str, Any] | None:
    """The ``add_argument`` keywords of a parameter that jsonargparse would parse differently from
    the command lines of the docs and scripts, else None (jsonargparse adds it from the signature).

    * ``bool`` (default False) is a flag given alone, ``--no_progress``; jsonargparse wants a
      value (``--no_progress true``).
    * ``Sequence[X]`` (``list``, ``tuple``) takes space-separated values, ``--steps 1 2 5``;
      jsonargparse wants one value, ``--steps [1,2,5]``. ``Sequence[Literal[...]]`` takes those choices.
    """
    hint = _without_none(hint)
    if hint is bool:
        if param.default is not False:
            raise TypeError(f"the flag {param.name!r} must default to False: `--{param.name}` alone sets it")
        return {"action": "store_true"}
    if typing.get_origin(hint) not in (list, tuple, collections.abc.Sequence):
        return None
    item = typing.get_args(hint)[0] if typing.get_args(hint) else str
    keywords: dict[str, Any] = {"nargs": "+"}
    if typing.get_origin(item) is Literal:
        keywords["choices"] = list(typing.get_args(item))
    else:
        keywords["type"] = item
    if param.default is inspect.Parameter.empty:
        keywords["required"] = True
    else:
        keywords["default"] = None if param.default is None else list(param.default)
    return keywords


def function_parser(prog: str, function: Callable, description: str | None = None) -> CommandParser:
    """The parser of ``ae-ot <command>`` from ``function``'s signature, as LightningCLI builds ``fit``'s.

    Every parameter before ``*`` is an option ``--<name>`` (:func:`command_options`), in the
    signature's order: its type and default are the signature's (required when it has no
    default; ``Literal[...]`` gives the choices), its help is the parameter's entry in the
    docstring's ``Parameters`` section. jsonargparse adds them
    (``add_function_arguments``, no group, so ``--num_samples`` and not ``--sample.num_samples``),
    except flags and lists, added with argparse's ``store_true`` and ``nargs="+"``
    (:func:`argparse_keywords`) so that ``--no_progress`` and ``--ckpt_paths a.ckpt b.ckpt`` parse
    as they always have.

    Raises TypeError when an option has no entry in the docstring: it would have no ``--help``.
    """
    parser = command_parser(prog, description)
    options = command_options(function)
    docs = option_docs(function)
    undocumented = [param.name for param in options if not docs.get(param.name)]
    if undocumented:
        raise TypeError(f"{function.__qualname__}: document {undocumented} in the Parameters section of its "
                        "docstring; each entry is the --help of its option")
    hints = typing.get_type_hints(function)
    every_name = set(inspect.signature(function).parameters)
    batch: list[str] = []   # consecutive parameters jsonargparse adds, in one call

    def add_batch():
        if batch:
            parser.add_function_arguments(function, as_group=False, skip=every_name - set(batch))
            batch.clear()

    for param in options:
        keywords = argparse_keywords(param, hints.get(param.name))
        if keywords is None:
            batch.append(param.name)
            continue
        add_batch()
        parser.add_argument(f"--{param.name}", help=docs[param.name], **keywords)
    add_batch()
    return parser


def run_function(parser: ArgumentParser, function: Callable, argv: list[str] | None = None, **python_only):
    """Parse ``argv`` with ``parser`` (from :func:`function_parser`) and return
    ``function(**options, **python_only)``. Only ``function``'s own parameters are passed:
    ``--config`` and what jsonargparse adds (``__path__``) are not."""
    parsed = parser.parse_args(argv).as_dict()
    options = {param.name: parsed[param.name] for param in command_options(function) if param.name in parsed}
    return function(**options, **python_only)


def command_line(prog: str, options: dict[str, Any]) -> str:
    """``prog --name value ...``: a command line that gives ``options`` (values space-separated for a
    list, a flag alone when True; False, None and empty lists left out). A run started from Python
    records it where a run from the shell records what was typed.

    Examples
    --------
    >>> command_line("ae-ot sample", {"num_samples": 64, "output": "samples.png"})
    'ae-ot sample --num_samples 64 --output samples.png'
    """
    words = shlex.split(prog)
    for name, value in options.items():
        if value is None or value is False or (isinstance(value, (list, tuple)) and not value):
            continue
        words.append(f"--{name}")
        if isinstance(value, (list, tuple)):
            words += [str(item) for item in value]
        elif value is not True:
            words.append(str(value))
    return shlex.join(words)
