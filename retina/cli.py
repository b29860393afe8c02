"""The ``retina`` command line: thin click commands over the API."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path

import click
import numpy as np

from ._version import __version__
from .units import FRAME_MS

BACKEND = click.Choice(["auto", "cpu", "gpu"])
SEED = click.IntRange(0, 2**63 - 1)
DTYPE = click.Choice(["float32", "float64"])


class Registered(click.Choice):
    """A choice among the names of one of the package's registries, read when it is needed (so the
    command line offers whatever is registered, and importing the CLI stays cheap)."""

    def __init__(self, names, *, aliases=None):
        self._names, self._aliases = names, dict(aliases or {})
        super().__init__([], case_sensitive=True)

    @property
    def choices(self):
        return tuple(self._names()) + tuple(self._aliases)

    @choices.setter
    def choices(self, value):
        pass

    def convert(self, value, param, ctx):
        value = super().convert(value, param, ctx)
        return self._aliases.get(value, value)


def _phenomena():
    from .phenomena import names
    return names()


def _generators():
    from .stimuli import GENERATORS
    return GENERATORS


def _kinds():
    from .datasets import KINDS
    return KINDS


def _lesions():
    from .insilico import LESIONS
    return LESIONS


def _attribution(name):
    def names():
        from . import attribution
        return getattr(attribution, name)
    return names


def _workloads():
    from .bench import WORKLOADS
    return WORKLOADS


PHENOMENON = Registered(_phenomena)


class Assignment(click.ParamType):
    """``NAME=VALUE``: a name and its value, parsed by ``parse`` (a function of the text)."""

    name = "NAME=VALUE"

    def __init__(self, parse, what):
        self.parse, self.what = parse, what

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        name, sep, text = str(value).partition("=")
        name = name.strip()
        if not sep or not name or not text:
            self.fail(f"expected NAME={self.what}, got {value!r}", param, ctx)
        try:
            return name, self.parse(text)
        except ValueError as exc:
            self.fail(f"cannot read the {self.what} of {value!r}: {exc}", param, ctx)


class Simulator(click.ParamType):
    """A simulator by name (``shipped``, a counterfactual circuit, ``calibration-<date>``) or parameter file:
    converted to :class:`~retina.insilico.InSilicoParams` (:func:`retina.insilico.named_params`)."""

    name = "NAME|FILE"

    def convert(self, value, param, ctx):
        from .insilico import InSilicoParams, named_params

        if isinstance(value, InSilicoParams):
            return value
        try:
            return named_params(value)
        except (ValueError, OSError) as exc:
            self.fail(str(exc), param, ctx)


SIMULATOR_HELP = ("the shipped calibration ('shipped', the default), a counterfactual circuit ('osr-onf', "
                  "'anticipation-gain-control'), an earlier calibration ('calibration-2026-12-03') or a parameter "
                  "JSON file")


def _assignments(items, option):
    """A repeatable ``NAME=...`` option as a dict; a name given twice is refused."""
    out = {}
    for name, value in items:
        if name in out:
            raise click.BadParameter(f"{name!r} is given more than once", param_hint=option)
        out[name] = value
    return out


class IntList(click.ParamType):
    """Comma-separated integers, e.g. ``8,8``."""

    name = "INTS"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            return tuple(int(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"expected comma-separated integers, got {value!r}", param, ctx)


def _quiet(quiet):
    """``-q``: no progress bars and no informational messages (warnings still show)."""
    if quiet:
        os.environ["RETINA_NO_PROGRESS"] = "1"
        logging.getLogger("retina").setLevel(logging.WARNING)


def _setup_logging():
    """The library is quiet by default; the command line shows its INFO messages (epochs...) on stderr."""
    logger = logging.getLogger("retina")
    if not any(getattr(h, "_retina_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._retina_cli = True
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _load_model(spec, seed, n_cells):
    from .io import load_model
    from .model import RetinaCNN

    if spec == "random":
        return RetinaCNN.random(n_cells, seed=seed)
    return load_model(spec)


def _fail(exc):
    raise click.ClickException(str(exc)) from None


def _check_output(path, *inputs, directory=False, option="--output"):
    """An output the command can write, checked before any work: not one of its inputs, in a writable folder."""
    from .io.model import BUNDLED_MODELS

    out = Path(path).expanduser()
    for src in inputs:
        if src is None or src in ("random", "insilico", "planted", *BUNDLED_MODELS):
            continue
        src_p = Path(src).expanduser()
        if out.resolve() == src_p.resolve() or (out.exists() and src_p.exists() and os.path.samefile(out, src_p)):
            raise click.BadParameter(f"{str(path)!r} is also an input of this command ({str(src)!r}); writing it "
                                     "would destroy the input", param_hint=option)
    folder = out if directory else (out.parent if str(out.parent) else Path("."))
    if folder.exists() and not folder.is_dir():
        raise click.BadParameter(f"{str(folder)!r} is not a folder", param_hint=option)
    if not directory and out.is_dir():
        raise click.BadParameter(f"{str(path)!r} is a folder; give a file name", param_hint=option)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.BadParameter(f"cannot create the folder {str(folder)!r}: {exc.strerror or exc}",
                                 param_hint=option) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise click.BadParameter(f"the folder {str(folder)!r} is not writable", param_hint=option)
    return out


@contextlib.contextmanager
def _locked(path):
    """Hold the output's lock for the command (a second run on the same output is refused, not interleaved)."""
    from .io._files import lock_output, unlock_output

    try:
        lock_output(path)
    except RuntimeError as exc:
        _fail(exc)
    try:
        yield
    finally:
        unlock_output(path)


def cluster_options(fn):
    """``--scheduler`` / ``--workers``: run on an existing Dask cluster or an embedded local one."""
    fn = click.option("--workers", type=click.IntRange(1), default=None,
                      help="Start an embedded Dask LocalCluster of N single-threaded worker processes (each runs "
                           "the kernels on cores/N threads). Needs the 'dist' extra.")(fn)
    fn = click.option("--scheduler", default=None, metavar="ADDRESS",
                      help="Run on an existing Dask cluster: a scheduler address (tcp://host:8786) or a scheduler "
                           "file. Needs the 'dist' extra.")(fn)
    return fn


@contextlib.contextmanager
def _cluster(scheduler, workers, quiet):
    """The Dask client the options ask for (``None`` when neither option is given); closed on exit."""
    from .distributed import client_from_options

    with contextlib.ExitStack() as stack:
        try:
            client = stack.enter_context(client_from_options(scheduler, workers,
                                                             echo=None if quiet else click.echo))
        except (ImportError, ValueError, RuntimeError) as exc:
            _fail(exc)
        yield client


class Guarded(click.Group):
    """The command group: every failure ends in one clear line and a non-zero exit, never a traceback.

    Errors the commands foresee are ``click`` errors already; anything else is caught here and reported in
    one line (``--debug`` shows the traceback).  Ctrl-C says how to resume; a full disk says so.
    """

    def invoke(self, ctx):
        previous = _install_interrupt_handler()
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            _INTERRUPT["handled"] = True
            click.echo("interrupted: rerun the same command to resume from what was written", err=True)
            ctx.exit(130)
        except Exception as exc:
            if _interrupted(exc):    # Ctrl-C inside a compiled kernel surfaces as the kernel's SystemError
                _INTERRUPT["handled"] = True
                click.echo("interrupted: rerun the same command to resume from what was written", err=True)
                ctx.exit(130)
            if _DEBUG["on"]:
                raise
            raise click.ClickException(_one_line(exc)) from None
        finally:
            _INTERRUPT["handled"] = True
            if previous is not None:
                signal.signal(signal.SIGINT, previous)


_DEBUG = {"on": False}
_INTERRUPT = {"seen": False, "handled": False}
REINTERRUPT_S = 2.0
"""After Ctrl-C, the interrupt is raised again in the main thread every this many seconds until the command has
stopped: a KeyboardInterrupt that lands in a finaliser or a C callback is printed and swallowed by Python, and the
command would otherwise run on to the end."""


def _install_interrupt_handler():
    """Ctrl-C raises KeyboardInterrupt as usual, and keeps raising it until the command has stopped; returns the
    previous handler (None when not in the main thread)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    _INTERRUPT.update(seen=False, handled=False)

    def keep_interrupting():
        import _thread

        while True:
            time.sleep(REINTERRUPT_S)
            if _INTERRUPT["handled"]:
                return
            _thread.interrupt_main()

    def on_sigint(signum, frame):
        if not _INTERRUPT["seen"]:
            _INTERRUPT["seen"] = True
            threading.Thread(target=keep_interrupting, daemon=True).start()
        raise KeyboardInterrupt

    return signal.signal(signal.SIGINT, on_sigint)


def _interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` was caused by Ctrl-C (possibly wrapped by a C extension that was running at the time)."""
    seen = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, KeyboardInterrupt):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


def _one_line(exc: BaseException) -> str:
    import errno

    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return ("the disk is full (no space left on device) while writing; the partial output is kept: free "
                f"space and rerun the same command to resume ({exc.filename or ''})").replace(" ()", "")
    if isinstance(exc, MemoryError):
        return "out of memory: use a smaller size (or --max-memory to be refused before allocating)"
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename or exc}"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text} (an unexpected error; rerun with --debug for the traceback)"


@click.group(cls=Guarded, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="retina")
@click.option("--debug", is_flag=True, help="Show the full traceback of an unexpected error.")
@click.option("--max-memory", default=None, metavar="SIZE",
              help="Memory budget (e.g. 8G): work that would need more is refused before allocating. Default: "
                   "the memory available.")
def main(debug, max_memory):
    """retina: deep-network models of the retina, attributed and reduced to mechanisms."""
    from ._resources import set_max_memory

    _DEBUG["on"] = debug
    try:
        set_max_memory(max_memory)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--max-memory") from None
    _setup_logging()


@main.command()
@click.argument("model", default="random")
@click.option("--stimulus", "stimulus_path", type=click.Path(dir_okay=False), default=None,
              help="HDF5 stimulus file; default: generate one (see --kind).")
@click.option("--kind", type=click.Choice(["natural", "white_noise"]), default="natural", show_default=True,
              help="Stimulus to generate when --stimulus is not given.")
@click.option("--frames", type=click.IntRange(1), default=3000, show_default=True, help="Frames to generate.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the random model and stimulus.")
@click.option("--cells", "n_cells", type=click.IntRange(1), default=5, show_default=True,
              help="Cells of the random model.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="rates.h5", show_default=True)
@click.option("--backend", type=BACKEND, default="auto", show_default=True)
@click.option("--dtype", type=DTYPE, default="float32", show_default=True)
@click.option("--batch", type=click.IntRange(1), default=None, help="Windows per kernel call.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
@click.option("--units", type=click.Choice(["contrast", "intensity", "model"]), default=None,
              help="Units of the stimulus (default: from its file; generated stimuli are contrast).")
def predict(model, stimulus_path, kind, frames, seed, n_cells, output, backend, dtype, batch, quiet, units):
    """Predict firing rates of MODEL (a model file, or 'random') and write them to HDF5.

    The stimulus' units come from its file (contrast for this package's files, raw intensity for a lab file)
    or are given with --units; the movie is converted with the model's norm_stats.
    """
    from ._resources import check_memory
    from .io import read_stimulus, save_rates
    from .stimuli import natural_movie, white_noise

    _quiet(quiet)
    _check_output(output, stimulus_path, model)
    try:
        check_memory(n_cells * 8 * 26 * 26 * 8 * 3, f"a random model with {n_cells} cells")
        net = _load_model(model, seed, n_cells)
        if stimulus_path:
            movie, file_units = read_stimulus(stimulus_path)
            source = os.path.abspath(stimulus_path)
        else:
            gen = natural_movie if kind == "natural" else white_noise
            check_memory(frames * net.frame_shape[0] * net.frame_shape[1] * 4 * 3,
                         f"a {kind} movie of {frames} frames")
            movie, source = gen(frames, net.frame_shape, seed=seed + 1).movie, f"{kind}(seed={seed + 1})"
            file_units = "contrast"
        units = units or file_units
        t0 = time.perf_counter()
        rates = net.predict(movie, backend=backend, dtype=dtype, batch=batch, progress=not quiet, units=units)
        dt = time.perf_counter() - t0
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        _fail(exc)
    save_rates(output, rates, window_frames=net.window_bins(rates.shape[0]), cell_ids=net.cell_ids,
               attrs={"model": model, "model_hash": net.content_hash(), "stimulus": source, "history": net.history,
                      "stimulus_units": units, "response_offset": net.response_offset})
    if not quiet:
        click.echo(f"{rates.shape[0]} windows x {rates.shape[1]} cells in {dt:.2f} s "
                   f"({rates.shape[0] / dt:.0f} windows/s); mean rate {rates.mean():.2f} Hz -> {output}")


@main.command("random-model")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True)
@click.option("--cells", "n_cells", type=click.IntRange(1), default=5, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--per-channel", is_flag=True, help="Per-channel (not per-unit) scale/shift.")
def random_model(output, n_cells, seed, per_channel):
    """Write a seeded random model (trained-like statistics) to an HDF5 model file."""
    from ._resources import check_memory
    from .model import RetinaCNN

    _check_output(output)
    check_memory(n_cells * 8 * 26 * 26 * 8 * 3, f"a random model with {n_cells} cells")
    RetinaCNN.random(n_cells, seed=seed, per_unit=not per_channel).save(output)
    click.echo(f"wrote {output}")


def _parse_value(text):
    """A JSON value, or the text itself when it is not JSON."""
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


@main.command()
@click.argument("kind", metavar="KIND", type=Registered(_generators, aliases={"natural": "natural_movie"}))
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True)
@click.option("--frames", type=click.IntRange(1), default=1000, show_default=True,
              help="Length, for generators that take n_frames.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed, for random generators.")
@click.option("-p", "--param", "params", multiple=True, type=Assignment(_parse_value, "VALUE"),
              help="Generator argument (JSON value), e.g. -p speed=0.14 -p reverse_at=25. Repeatable, each NAME once.")
def stimulus(kind, output, frames, seed, params):
    """Generate a stimulus movie of KIND (contrast units) and write it to HDF5."""
    import inspect

    from .io import save_stimulus
    from .stimuli import GENERATORS

    gen = GENERATORS[kind]
    sig = inspect.signature(gen).parameters
    kwargs = _assignments(params, "--param")
    unknown = [name for name in kwargs if name not in sig]
    if unknown:
        raise click.BadParameter(f"unknown NAME {', '.join(map(repr, unknown))} in NAME=VALUE: {kind} takes "
                                 f"{', '.join(sig)}", param_hint="--param")
    if "n_frames" in sig and "n_frames" not in kwargs:
        kwargs["n_frames"] = frames
    if "seed" in sig and "seed" not in kwargs:
        kwargs["seed"] = seed
    _check_output(output)
    from ._resources import check_disk, check_memory

    try:
        n = int(kwargs.get("n_frames", frames))
        fh, fw = (int(v) for v in kwargs.get("frame_shape", (50, 50)))
        canvas = int(kwargs.get("canvas", 0) or 0)
    except (TypeError, ValueError):
        raise click.BadParameter("n_frames, frame_shape and canvas must be integers", param_hint="--param") from None
    check_memory(n * fh * fw * 8 * 2 + canvas * canvas * 8 * 4, f"a {kind} movie of {n} frames of {fh}x{fw}")
    check_disk(output, n * fh * fw * 4, f"a {kind} movie of {n} frames")
    try:
        stim = gen(**kwargs)
    except (TypeError, ValueError) as exc:
        _fail(exc)
    save_stimulus(output, stim.movie, params=stim.params, events=stim.events)
    click.echo(f"wrote {output}: {stim.movie.shape}")


stimulus.help = (stimulus.help or "") + "\n\nKIND is one of: " + ", ".join(_generators()) + " (alias: natural)."


@main.command()
@click.option("-o", "--output", type=click.Path(file_okay=False), default="insilico-data", show_default=True,
              help="Directory for naturalscene.h5 and whitenoise.h5.")
@click.option("--kind", type=Registered(_kinds, aliases={"both": "both"}),
              default="both", show_default=True,
              help="'both': naturalscene and whitenoise; fullfield: full-field flicker; bars: flickering bars; "
                   "motion: moving bars; flashes: full-field flashes from grey.")
@click.option("--natural-minutes", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True)
@click.option("--noise-minutes", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Minutes of white noise (or of the fullfield, bars, motion or flashes stream).")
@click.option("--test-clips", type=click.IntRange(0), default=30, show_default=True,
              help="Held-out clips per file.")
@click.option("--clip-seconds", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True)
@click.option("--repeats", type=click.IntRange(1), default=20, show_default=True,
              help="Poisson repeats of each test clip.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--params", "params", type=Simulator(), default=None,
              help=f"The in-silico retina: {SIMULATOR_HELP}.")
@click.option("--lesion", multiple=True, type=Registered(_lesions),
              help="Remove part of the circuit. Repeatable.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@cluster_options
def simulate(output, kind, natural_minutes, noise_minutes, test_clips, clip_seconds, repeats, seed, params,
             lesion, quiet, scheduler, workers):
    """Simulate training and test sets with the in-silico retina (deep-retina HDF5 layout).

    Writes OUTPUT/naturalscene.h5 and/or OUTPUT/whitenoise.h5, chunk by chunk:
    an interrupted run resumes when rerun with the same options.
    """
    from .datasets import simulate_dataset
    from .insilico import InSilicoRetina

    _quiet(quiet)
    _check_output(output, directory=True)
    try:
        sim = InSilicoRetina(params, lesion=list(lesion))
    except (ValueError, OSError) as exc:
        _fail(f"--params: {exc}" if params is not None else exc)
    kinds = ["naturalscene", "whitenoise"] if kind == "both" else [kind]
    with _cluster(scheduler, workers, quiet) as client:
        for k in kinds:
            minutes = natural_minutes if k == "naturalscene" else noise_minutes
            t0 = time.time()
            try:
                path = simulate_dataset(os.path.join(output, f"{k}.h5"), k, retina=sim, train_minutes=minutes,
                                        test_clips=test_clips, clip_s=clip_seconds, repeats=repeats, seed=seed,
                                        progress=not quiet, client=client)
            except (ValueError, RuntimeError) as exc:
                _fail(exc)
            if not quiet:
                click.echo(f"wrote {path}: {minutes:g} min train, {test_clips} x {clip_seconds:g} s test clips "
                           f"x {repeats} repeats, {sim.n_cells} cells ({time.time() - t0:.0f} s)")


@main.command("import")
@click.argument("source", metavar="IN", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, help="The model file to write.")
@click.option("--format", "fmt", type=click.Choice(["torch-deep-retina", "deep-retina-keras"]), default=None,
              help="Default: recognised from the file.")
@click.option("--frame-order", type=click.Choice(["oldest-first", "newest-first"]), default="oldest-first",
              show_default=True, help="How the source stacked a window's frames as input channels.")
def import_command(source, output, fmt, frame_order):
    """Import a torch-deep-retina checkpoint or deep-retina Keras weights as a retina model file.

    The checkpoint is read without torch and without executing anything it names (docs/lab.md).
    """
    from .io.importers import import_model

    _check_output(output, source)
    try:
        model = import_model(source, format=fmt, frame_order=frame_order)
    except (ValueError, FileNotFoundError, OSError) as exc:
        _fail(exc)
    model.save(output)
    click.echo(f"{model!r}\nnorm_stats {model.norm_stats}; from {model.metadata.get('source_format')} "
               f"{model.metadata.get('model_type')} -> {output}")


@main.command()
@click.argument("model")
def info(model):
    """Describe a model file."""
    try:
        net = _load_model(model, 0, 5)
    except (ValueError, FileNotFoundError) as exc:
        _fail(exc)
    click.echo(repr(net))
    click.echo(f"scale/shift: {'per channel' if net.per_channel else 'per unit'}")
    click.echo(f"cells: {', '.join(net.cell_ids)}")
    click.echo(f"norm_stats: {net.norm_stats} ({net.input_units} units)")
    click.echo(f"response bin: window [i, i + {net.history}) -> bin i + {net.history - 1 + net.response_offset}")
    click.echo(f"content hash: {net.content_hash()}")
    meta = net.metadata or {}
    for key in ("description", "recipe_name", "seed", "git_commit"):
        if meta.get(key) is not None:
            click.echo(f"{key.replace('_', ' ')}: {meta[key]}")


def _parse_cells(text, n_cells):
    if text is None:
        return None
    parts = [p for p in text.split(",") if p.strip()]
    try:
        if any("." in p for p in parts):
            vals = np.array([float(p) for p in parts])
            if vals.shape != (n_cells,):
                raise ValueError
            return vals
        return [int(p) for p in parts]
    except ValueError:
        raise click.BadParameter(f"expected cell indices like '0,2' or {n_cells} float weights, got {text!r}",
                                 param_hint="--cells") from None


@main.command()
@click.argument("model")
@click.argument("stimulus_path", metavar="STIMULUS.h5")
@click.option("--layer", type=Registered(_attribution("LAYERS")), default="conv1", show_default=True)
@click.option("--cells", default=None, help="Cell indices '0,2' or a float weight per cell; default every cell.")
@click.option("--steps", type=click.IntRange(1), default=50, show_default=True)
@click.option("--method", type=Registered(_attribution("METHODS")), default="midpoint", show_default=True)
@click.option("--kinks", type=Registered(_attribution("KINKS")), default="secant", show_default=True,
              help="ReLU derivatives as secant slopes over each step's cell, or at the nodes (textbook rule).")
@click.option("--pool", type=click.Choice(["none", "space", "rows"]), default="none", show_default=True)
@click.option("--dataset", default=None, help="Dataset in STIMULUS.h5 (default: stimulus, test/stimulus...).")
@click.option("--backend", type=BACKEND, default="auto", show_default=True)
@click.option("--dtype", type=DTYPE, default="float32", show_default=True)
@click.option("--batch", type=click.IntRange(1), default=None)
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True)
@click.option("-q", "--quiet", is_flag=True)
@click.option("--units", type=click.Choice(["contrast", "intensity", "model"]), default=None,
              help="Units of the stimulus (default: from its file).")
@cluster_options
def attribute(model, stimulus_path, layer, cells, steps, method, kinks, pool, dataset, backend, dtype, batch,
              output, quiet, units, scheduler, workers):
    """Integrated-gradient attributions of MODEL's responses to STIMULUS.h5, written to HDF5."""
    from .attribution import attribute as run
    from .io import read_stimulus

    _quiet(quiet)
    _check_output(output, stimulus_path, model)
    try:
        net = _load_model(model, 0, 5)
        movie, file_units = read_stimulus(stimulus_path, dataset=dataset)
        with _cluster(scheduler, workers, quiet) as client:
            attr = run(net, movie, layer=layer, cells=_parse_cells(cells, net.n_cells), n_steps=steps,
                       method=method, pool=None if pool == "none" else pool, backend=backend, batch=batch,
                       dtype=dtype, progress=not quiet, kinks=kinks, client=client, units=units or file_units,
                       baseline=net.grey)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        _fail(exc)
    attr.settings.update({"model": model, "model_hash": net.content_hash(),
                          "stimulus": os.path.abspath(stimulus_path)})
    attr.save(output)
    if not quiet:
        click.echo(f"{layer} attributions {attr.values.shape} via {attr.path}; "
                   f"max |delta| {np.abs(attr.delta).max():.2e} -> {output}")


@main.command()
@click.argument("data", metavar="DATA.h5", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="model.h5", show_default=True)
@click.option("--response", default="firing_rate_10ms", show_default=True,
              help="Response dataset to fit: any firing_rate_* the file has (e.g. firing_rate_20ms), 'binned' "
                   "(counts) or 'rate' (the simulator's noise-free rate).")
@click.option("--cells", default="all", show_default=True, help="Comma-separated cell indices, or 'all'.")
@click.option("--nskip", type=click.IntRange(0), default=0, show_default=True,
              help="Frames dropped at the start of the training split (adaptation), as deep-retina's nskip.")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Use only the first MINUTES of the training movie.")
@click.option("--epochs", type=click.IntRange(1), default=40, show_default=True)
@click.option("--epoch-windows", type=click.IntRange(1), default=30000, show_default=True)
@click.option("--batch", type=click.IntRange(1), default=500, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-3, show_default=True)
@click.option("--l2", type=click.FloatRange(min=0), default=1e-3, show_default=True)
@click.option("--noise", type=click.FloatRange(min=0), default=0.05, show_default=True)
@click.option("--channels", type=IntList(), default="8,8", show_default=True)
@click.option("--kernel-sizes", type=IntList(), default="15,11", show_default=True)
@click.option("--history", type=click.IntRange(1), default=40, show_default=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Checkpoint file (default OUTPUT.ckpt); an existing one with the same settings is resumed.")
@click.option("--seeds", type=IntList(), default=None,
              help="Train an ensemble, one model per seed (e.g. 0,1,2,3,4): OUTPUT gets -seed<N> before its "
                   "suffix, or use {seed} in it. Finished seeds are kept when rerun. With --workers/--scheduler "
                   "the seeds train in parallel.")
@click.option("--backend", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True)
@click.option("-q", "--quiet", is_flag=True)
@cluster_options
def train(data, output, response, cells, nskip, minutes, epochs, epoch_windows, batch, lr, l2, noise, channels,
          kernel_sizes, history, seed, checkpoint, seeds, backend, quiet, scheduler, workers):
    """Fit a CNN to DATA.h5 (deep-retina layout) and write the model to OUTPUT."""
    from .datasets import load_dataset, simulator_provenance
    from .train import TrainConfig, evaluate, train_ensemble
    from .train import train as fit

    _quiet(quiet)
    _check_output(output, data, checkpoint)
    if checkpoint is not None:
        _check_output(checkpoint, data, option="--checkpoint")
    if cells.strip() == "all":
        cell_idx = None
    else:
        try:
            cell_idx = [int(c) for c in cells.split(",")]
        except ValueError:
            raise click.BadParameter(f"expected 'all' or comma-separated cell indices, got {cells!r}",
                                     param_hint="--cells") from None
    try:
        tr = load_dataset(data, "train", response=response, cells=cell_idx, nskip=nskip)
        cfg = TrainConfig(channels=channels, kernel_sizes=kernel_sizes, history=history, epochs=epochs,
                          epoch_windows=epoch_windows, batch=batch, segments=10 if batch % 10 == 0 else 1, lr=lr,
                          l2=l2, noise=noise, seed=seed)
        x, y = tr.stimulus, tr.rates
        if minutes is not None:
            n = int(minutes * 60_000 / FRAME_MS)
            x, y = x[:n], y[:n]
        if seeds is not None or scheduler is not None or workers is not None:
            if seeds is None:
                raise ValueError("--workers/--scheduler train an ensemble: give the seeds with --seeds")
            if checkpoint is not None:
                raise ValueError("--checkpoint applies to one model; an ensemble keeps each finished seed's file")
            t0 = time.time()
            with _cluster(scheduler, workers, quiet) as client:
                results = train_ensemble(x, y, seeds, config=cfg, out=output, client=client, norm_stats=tr.stats,
                                         progress=not quiet, input_units=tr.units,
                                         metadata=dict(simulator_provenance(tr, cell_idx), data=os.path.abspath(data),
                                                       response=response))
            if not quiet:
                from .train.ensemble import seed_path

                for s_, r in zip(seeds, results):
                    click.echo(f"seed {s_}: best epoch {r.best_epoch}, validation correlation "
                               f"{r.best_val_corr:.3f} ({r.stopped or 'trained'}) -> {seed_path(output, s_)}")
                click.echo(f"{len(seeds)} models in {time.time() - t0:.0f} s")
            return
        ck = checkpoint or output + ".ckpt"
        t0 = time.time()
        with _locked(output):
            res = fit(x, y, config=cfg, checkpoint=ck, norm_stats=tr.stats, progress=not quiet, backend=backend,
                      input_units=tr.units)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        _fail(exc)
    model = res.model
    model.metadata.update(simulator_provenance(tr, cell_idx), data=os.path.abspath(data), response=response)
    model.save(output)
    if os.path.exists(ck):
        os.remove(ck)
    if quiet:
        return
    click.echo(f"trained {res.history[-1]['epoch']} epochs ({res.stopped}) in {time.time() - t0:.0f} s; "
               f"best epoch {res.best_epoch}, validation correlation {res.best_val_corr:.3f} -> {output}")
    try:
        te = load_dataset(data, "test", response=response, cells=cell_idx, norm_stats=tr.stats)
    except ValueError:
        return
    corr, _ = evaluate(model, te.stimulus, te.rates)
    click.echo("test correlation per cell: " + " ".join(f"{c:.2f}" for c in corr) + f"  (mean {corr.mean():.3f})")


@main.command("recipe")
@click.argument("recipe", default="generic")
@click.option("-o", "--output", type=click.Path(file_okay=False), default="build/recipe", show_default=True,
              help="Folder for the datasets, checkpoints, model.h5 and the report (an interrupted run resumes).")
@click.option("--max-stages", type=click.IntRange(1), default=None, help="Stop after this many stages.")
@click.option("--seed", type=click.IntRange(0), default=None,
              help="Replace the recipe's seed: each stage trains with its seed + 1000 x SEED (independent models).")
@click.option("--seeds", type=IntList(), default=None,
              help="Train one model per seed (e.g. 0,1,2,3,4) into OUTPUT/seed<N>, the datasets simulated once "
                   "and shared (default OUTPUT/data). With --workers/--scheduler the seeds train in parallel.")
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for the simulated datasets (default OUTPUT), to share them between seeds.")
@click.option("-q", "--quiet", is_flag=True)
@cluster_options
def recipe_command(recipe, output, max_stages, seed, seeds, data_dir, quiet, scheduler, workers):
    """Train a model from RECIPE: a recipe TOML file, or the name of a shipped one (default: generic, the bundled
    default model's; "tuned" is the protocol-tuned model's).

    Simulates the recipe's streams with the in-silico retina, trains its stages and writes OUTPUT/model.h5 (its
    provenance holds the recipe's text, the package version and the git commit) and OUTPUT/report.md.
    """
    from .train.recipe import run, run_seeds

    _quiet(quiet)
    _check_output(output, directory=True)
    if seeds is not None or scheduler is not None or workers is not None:
        try:
            if seeds is None:
                raise ValueError("--workers/--scheduler train one model per seed: give the seeds with --seeds")
            if seed is not None:
                raise ValueError("give either --seed (one model) or --seeds (one model per seed), not both")
            with _cluster(scheduler, workers, quiet) as client:
                fits = run_seeds(recipe, output, seeds, client=client, data_dir=data_dir, progress=not quiet,
                                 max_stages=max_stages)
        except (ValueError, FileNotFoundError, RuntimeError) as exc:
            _fail(exc)
        if not quiet:
            for s_, fit in fits.items():
                held = ", ".join(f"{k} {v:.3f}" for k, v in fit.items() if not k.startswith("validation"))
                click.echo(f"seed {s_}: validation correlation {fit['validation']:.3f}, loss "
                           f"{fit['validation_loss']:.4f}; held-out {held} -> {output}/seed{s_}/model.h5")
            best = min(fits, key=lambda s_: np.nan_to_num(fits[s_]["validation_loss"], nan=np.inf))
            click.echo(f"lowest validation loss: seed {best} (the recipe's own selection data)")
        return
    try:
        _, report = run(recipe, output, progress=not quiet, max_stages=max_stages, seed=seed, data_dir=data_dir)
    except (ValueError, FileNotFoundError) as exc:
        _fail(exc)
    if not quiet:
        fits = ", ".join(f"{k[5:]} {v['mean_corr']:.3f}" for k, v in report.items() if k.startswith("test_"))
        shows = ", ".join(f"{k} {'yes' if d['cnn_shows_it'] else 'no'}" for k, d in report["directions"].items())
        click.echo(f"held-out correlation: {fits}\nphenomena in the simulator's direction: {shows}")
        click.echo(f"wrote {output}/model.h5 and {output}/report.md in {report['total_seconds'] / 60:.1f} min")


@main.command()
@click.argument("model", default="default")
@click.option("-o", "--output", type=click.Path(file_okay=False), default="results", show_default=True,
              help="Directory for results.h5, one PNG per phenomenon and summary.txt.")
@click.option("--phenomenon", "names", multiple=True, type=PHENOMENON,
              help="Phenomena to run (repeatable); default every registered one.")
@click.option("--steps", type=click.IntRange(1), default=25, show_default=True,
              help="Integrated-gradient steps (secant rule: 25 are closer to the exact attributions than 50 "
                   "node-rule steps).")
@click.option("--share", type=click.FloatRange(0, 1, min_open=True), default=0.9, show_default=True,
              help="Share of pooled |attribution| the kept channels must carry.")
@click.option("--context-ms", type=click.FloatRange(0), default=500.0, show_default=True,
              help="Response attributed either side of each window of interest (ms).")
@click.option("--whole-movies", is_flag=True,
              help="Attribute every frame of every stimulus instead (about 3x slower).")
@click.option("--params", "params", type=Simulator(), default=None,
              help=f"The in-silico retina to judge against (and to plant from): {SIMULATOR_HELP}; default: the one "
                   "the model records, else the shipped calibration.")
@click.option("--untrained", "n_untrained", type=click.IntRange(0, 50), default=3, show_default=True,
              help="Untrained CNNs of the model's shape scored beside it (the recovery benchmark's untrained null).")
@click.option("--no-truth", is_flag=True, help="Skip the comparison with the in-silico retina.")
@click.option("--no-figures", is_flag=True, help="Skip the PNG figures.")
@click.option("-q", "--quiet", is_flag=True)
def explain(model, output, names, steps, share, context_ms, whole_movies, params, n_untrained, no_truth,
            no_figures, quiet):
    """Explain MODEL's OSR, latency coding, motion reversal and anticipation (default: the bundled model).

    Attributes each phenomenon to layer-1 channels, reduces the model to the
    important ones, and compares the result with the simulator's known circuit.
    MODEL 'planted' is the recovery benchmark's positive control: a CNN set
    from the simulator (--params, else the calibrated set), trained on nothing.
    """
    from .explain import explain as run
    from .insilico import InSilicoRetina

    _quiet(quiet)
    _check_output(output, model, directory=True)
    try:
        sim = InSilicoRetina(params) if params is not None else None   # None: the one the model records
        if model == "planted":
            from .recovery import planted_model

            net = planted_model(sim)
        else:
            net = _load_model(model, 0, 5)
    except (ValueError, FileNotFoundError) as exc:
        _fail(exc)
    t0 = time.time()
    with _locked(output):
        report = run(net, output, sim=sim, phenomena=names or None, n_steps=steps, share=share,
                     figures=not no_figures, progress=not quiet, truth=not no_truth,
                     context_ms=None if whole_movies else context_ms, n_untrained=n_untrained)
    if not quiet:
        click.echo((Path(output) / "summary.txt").read_text())
        figures = report["_meta"]["figures"]
        wrote = "results.h5, summary.txt" + (", figures" if figures == "written" else "")
        click.echo(f"wrote {output}/ ({wrote}) in {time.time() - t0:.0f} s")
        if figures.startswith("skipped"):
            click.echo(f"figures {figures}")
    return report


@main.command()
@click.argument("models", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(file_okay=False), default="results/emergence", show_default=True,
              help="Folder for emergence.json, emergence.md and one file per model judged (a rerun resumes).")
@click.option("--phenomenon", "names", multiple=True, type=PHENOMENON,
              help="Phenomena to judge (repeatable); default every registered one.")
@click.option("--untrained", "n_untrained", type=click.IntRange(0, 50), default=3, show_default=True,
              help="Untrained CNNs of each model's shape in the recovery benchmark's null.")
@click.option("-q", "--quiet", is_flag=True)
def emergence(models, output, names, n_untrained, quiet):
    """Do the phenomena emerge?  Judge MODELS (e.g. the seeds of one recipe) on the held-out protocols.

    Per model: the fit from the recipe's report, each phenomenon's held-out checks at the spec's thresholds beside
    the simulator's, the recovery benchmark with its nulls and the dominant functional part; then how many models
    show each phenomenon and agree on its mechanism (docs/emergence.md).
    """
    from .emergence import emergence as run

    _quiet(quiet)
    _check_output(output, *models, directory=True)
    t0 = time.time()
    with _locked(output):
        try:
            report = run(models, output, names=names or None, n_untrained=n_untrained, progress=not quiet)
        except (ValueError, FileNotFoundError) as exc:
            _fail(exc)
    if not quiet:
        for name, s in report["summary"]["phenomena"].items():
            click.echo(f"{name}: emerges in {s['emerges']}/{s['n_models']} (simulator passes: "
                       f"{'yes' if s['simulator_passes'] else 'no'}), recovered in {s['recovered']}, dominant part "
                       f"agreed by {s['agree_with_simulator']} with the simulator ({s['simulator_dominant']}); "
                       f"pass mark {'met' if s['pass_mark'] else 'not met'}")
        click.echo(f"wrote {output}/emergence.md in {time.time() - t0:.0f} s")
    return report


def _values(text):
    """``"4,6,8"`` or ``"2:20"`` (inclusive integer range) or ``"-1:-0.1:10"`` (linspace) -> list; text values
    (``none,A1``) stay text."""
    parts = text.split(":")
    try:
        if len(parts) == 2:
            return list(range(int(parts[0]), int(parts[1]) + 1))
        if len(parts) == 3:
            return np.linspace(float(parts[0]), float(parts[1]), int(parts[2])).round(6).tolist()
    except ValueError:
        pass
    out = []
    for v in text.split(","):
        v = v.strip()
        if v.lstrip("-").isdigit():
            out.append(int(v))
        else:
            try:
                out.append(float(v))
            except ValueError:
                out.append(v)
    return out


class Shard(click.ParamType):
    """``i/n``: the i-th of n shards (0-based)."""

    name = "I/N"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        i, sep, n = str(value).partition("/")
        try:
            i_, n_ = int(i), int(n)
        except ValueError:
            self.fail(f"expected I/N with 0 <= I < N, e.g. 0/4, got {value!r}", param, ctx)
        if not sep or not 0 <= i_ < n_:
            self.fail(f"expected I/N with 0 <= I < N, e.g. 0/4, got {value!r}", param, ctx)
        return i_, n_


def _sweep_models(spec):
    """MODEL argument of ``retina sweep``: one model, or several comma-separated (swept as the ``model`` axis)."""
    names = [m.strip() for m in spec.split(",") if m.strip()]
    if not names:
        raise ValueError(f"MODEL must name at least one model, got {spec!r}")
    loaded = {}
    for name in names:
        if name == "insilico":
            from .insilico import InSilicoRetina
            loaded[name] = InSilicoRetina()
        else:
            loaded[name] = _load_model(name, 0, 5)
    return loaded[names[0]] if len(names) == 1 else loaded


@main.command()
@click.argument("model", default="default")
@click.argument("phenomenon", type=PHENOMENON)
@click.option("-p", "--param", "params", multiple=True, type=Assignment(_values, "VALUES"),
              help="A swept parameter: NAME=v1,v2,... or NAME=a:b (integers a..b) or NAME=a:b:n (n values "
                   "from a to b). Repeat for a grid, e.g. -p periods=2:20 -p intensity=-1:-0.1:10. For the "
                   "in-silico retina also -p lesion=none,A1,ONs+A1 and -p sim.tau_membrane_ms=20,40.")
@click.option("--grid", "grid_file", type=click.Path(dir_okay=False), default=None,
              help="Conditions file (CSV with a header of parameter names, or JSON list of objects): one point "
                   "per row, for non-Cartesian designs (instead of -p).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="sweep.h5", show_default=True,
              help="HDF5 file; an interrupted sweep resumes from OUTPUT.partial.")
@click.option("--steps", type=click.IntRange(1), default=50, show_default=True, help="Integrated-gradient steps.")
@click.option("--no-explain", is_flag=True, help="Measure only (no attribution and reduction).")
@click.option("--shard", type=Shard(), default=None,
              help="Run only shard I of N (points I, I+N, ...), e.g. in a job array; join with retina sweep-merge.")
@click.option("-q", "--quiet", is_flag=True)
@cluster_options
def sweep(model, phenomenon, params, grid_file, output, steps, no_explain, shard, quiet, scheduler, workers):
    """Sweep PHENOMENON over stimulus parameters on MODEL ('default', a model file, 'random' or 'insilico';
    several comma-separated models are swept too).

    Writes every point's measures, responses and pooled attributions to OUTPUT
    and prints a table of the main measures.
    """
    from .sweep import read_conditions
    from .sweep import sweep as run

    _quiet(quiet)
    grid = _assignments(params, "--param")
    if bool(grid) == bool(grid_file):
        raise click.UsageError("give the points either with -p NAME=VALUES (a grid) or with --grid FILE")
    _check_output(output, grid_file, *model.split(","))
    try:
        conditions = read_conditions(grid_file) if grid_file else None
        net = _sweep_models(model)
        with _cluster(scheduler, workers, quiet) as client:
            res = run(net, phenomenon, grid or None, conditions=conditions, out=output, progress=not quiet,
                      explain=not no_explain, n_steps=steps, client=client, shard=shard)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        _fail(exc)
    if not quiet:
        _print_sweep(res)
        click.echo(f"wrote {output}")


def _print_sweep(res):
    names = list(res.points[0]) if res.points else []
    keys = [k for k in res.measures[0] if not k.startswith(("reduced", "ablated"))][:4] if res.measures else []
    click.echo("  ".join(f"{k:>14}" for k in names + keys))
    for pt, m in zip(res.points, res.measures):
        click.echo("  ".join([f"{pt.get(k)!s:>14}" for k in names] + [f"{m.get(k, float('nan')):>14.4g}"
                                                                       for k in keys]))


@main.command("sweep-merge")
@click.argument("output", metavar="OUT.h5", type=click.Path(dir_okay=False))
@click.argument("shards", metavar="SHARD.h5...", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-q", "--quiet", is_flag=True)
def sweep_merge(output, shards, quiet):
    """Join the shard files of one sweep (retina sweep --shard I/N) into OUT.h5, checking they belong together."""
    from .sweep import merge_shards

    _check_output(output, *shards)
    try:
        res = merge_shards(output, shards)
    except (ValueError, FileNotFoundError, OSError) as exc:
        _fail(exc)
    if not quiet:
        click.echo(f"merged {len(shards)} shards: {len(res.points)} points -> {output}")


def _sci(v):
    return "-" if not np.isfinite(v) else f"{v:.1e}"


@main.command()
@click.option("--workload", "workloads", multiple=True,
              type=Registered(_workloads),
              help="Workloads to run (repeatable); default all.")
@click.option("--scale", type=click.FloatRange(0.01, 10), default=1.0, show_default=True,
              help="Scale the workload sizes (e.g. 0.1 for a quick look).")
@click.option("--backend", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True)
@click.option("--peers", is_flag=True,
              help="Run each workload beside its peer (PyTorch, captum; the 'bench' extra), interleaved, and print "
                   "the median same-run ratio.")
@click.option("--repeat", type=click.IntRange(1, 100), default=None, help="Repetitions per workload (peers).")
def bench(workloads, scale, backend, peers, repeat):
    """Run the canonical workloads and print a table."""
    from .bench import WORKLOADS, matmul_rate, run_workload

    if peers:
        from .bench_peers import PEERS, run_peers

        names = [w for w in (workloads or PEERS) if w in PEERS]
        if not names:
            _fail(f"no peer for {', '.join(workloads)}; peers exist for {', '.join(PEERS)}")
        try:
            rows = run_peers(names, scale=scale, repeat=repeat)
        except RuntimeError as exc:
            _fail(exc)
        head = (f"{'workload':<18} {'unit':<12} {'work':>6} {'retina s':>9} {'peer s':>9} {'ratio':>7} "
                f"{'max rel diff':>12} {'p99':>8}")
        click.echo(f"{os.cpu_count()} CPUs; ratio = median over repetitions of peer time / retina time")
        click.echo(head)
        click.echo("-" * len(head))
        for r in rows:
            click.echo(f"{r.workload:<18} {r.unit:<12} {r.work:>6} {np.median(r.retina_s):>9.3f} "
                       f"{np.median(r.peer_s):>9.3f} {r.ratio:>6.1f}x {_sci(r.max_rel_diff):>12} "
                       f"{_sci(r.p99_rel_diff):>8}  {r.detail}")
        return

    rate = matmul_rate()
    click.echo(f"float32 matmul floor: {rate / 1e9:.1f} GFLOP/s; {os.cpu_count()} CPUs")
    rows = []
    for name in workloads or tuple(WORKLOADS):
        try:
            rows.append(run_workload(name, scale=scale, backend=backend, rate=rate))
        except RuntimeError as exc:
            _fail(exc)
    head = (f"{'workload':<18} {'backend':<8} {'figure':>12} {'unit':<15} {'seconds':>8} {'floor':>7} "
            f"{'max rel err':>11}")
    click.echo(head)
    click.echo("-" * len(head))
    for r in rows:
        click.echo(f"{r.workload:<18} {r.backend:<8} {r.figure:>12.1f} {r.unit:<15} {r.seconds:>8.2f} "
                   f"{r.floor_fraction:>7.2f} {r.max_rel_error:>11.1e}  {r.detail}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
