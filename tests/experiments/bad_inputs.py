"""Bad inputs and the errors they get: the one source of docs/bad_inputs.md and of the tests in
tests/test_bad_inputs_table.py.

Each :class:`Case` is one row of the table and one test. Two kinds of case:

- :func:`cli`: a command line of ``python experiments/run.py``, run in-process the way run.py runs it
  (Hydra composes the config, then ``validate``, ``build`` or ``execute``, the first steps of a run);
- :func:`api`: one Python expression against the library, evaluated in the namespace of
  :func:`namespace` (``sde``, ``score``, ``x``, ...), so the text in the table is the code that runs.

``match`` is a regular expression searched (``re.DOTALL``) in :func:`error_text` of the exception;
it checks that the message names the offending argument, value or file.

Regenerate the table with ``.venv/bin/python scripts/bad_inputs_table.py``.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "bad_inputs.md"
TMP_PREFIX = "sde_gen_bad_inputs_"
REGENERATE = ".venv/bin/python scripts/bad_inputs_table.py"
MAX_MESSAGE = 320  # characters of a message shown in the table


@dataclass(frozen=True)
class Case:
    """One bad input: ``trigger()`` must raise ``error`` with a message matching ``match``."""

    id: str
    category: str
    bad_input: str  # what the user writes: a command line or a Python expression
    trigger: Callable[[], object]
    error: type[BaseException]
    match: str


# -- running a case and reading its error -------------------------------------------------------------


def run_case(case: Case) -> Exception | None:
    """The exception ``case.trigger()`` raises, or ``None`` if it raises nothing."""
    try:
        case.trigger()
    except Exception as e:  # the exception is what we want
        return e
    return None


def error_text(exc: BaseException) -> str:
    """The message a user reads: the exception's text, then that of each cause it does not already
    contain (Hydra wraps the library's error), with machine-specific paths replaced by ``<repo>``
    and ``<tmp>``."""
    parts: list[str] = []
    e: BaseException | None = exc
    while e is not None:
        msg = str(e).strip()
        if msg and not any(msg in p for p in parts):
            parts.append(msg)
        e = e.__cause__
    return normalise("\n".join(parts))


def error_type(exc: BaseException) -> str:
    """``ValueError``, or ``InstantiationException from ValueError`` for a wrapped error."""
    names = [type(exc).__name__]
    if exc.__cause__ is not None:
        names.append(type(exc.__cause__).__name__)
    return " from ".join(names)


def normalise(text: str) -> str:
    tmp = re.escape(tempfile.gettempdir().rstrip("/")) + "/" + TMP_PREFIX + r"[^/\s'\"\\)]+"
    return re.sub(tmp, "<tmp>", text).replace(str(ROOT), "<repo>")


def check(case: Case, exc: Exception | None) -> str | None:
    """``None`` if ``exc`` is what ``case`` expects, else what is wrong."""
    if exc is None:
        return f"{case.bad_input}: no error raised, expected {case.error.__name__}"
    if not isinstance(exc, case.error):
        return (
            f"{case.bad_input}: raised {error_type(exc)}, expected {case.error.__name__}: {error_text(exc)}"
        )
    if not re.search(case.match, error_text(exc), re.DOTALL):
        return f"{case.bad_input}: message does not match {case.match!r}:\n{error_text(exc)}"
    return None


# -- cases through experiments/run.py --------------------------------------------------------------------


def _run_module():
    from experiments import run

    return run


def _compose(overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


STAGES = ("compose", "build", "execute")


def cli(id: str, overrides: str, error, match: str, stage: str = "build") -> Case:
    """``python experiments/run.py <overrides>``, run in-process up to ``stage``: Hydra composes the
    config (``compose``), then run.py's ``build(cfg)`` instantiates every object of the run, each
    checking its own arguments (``build``); ``execute`` calls ``run.execute(cfg)`` into a fresh
    directory (for checks that need the run directory)."""
    assert stage in STAGES, stage
    words = overrides.split()

    def trigger():
        run = _run_module()
        cfg = _compose(words)
        if stage == "execute":
            with tempfile.TemporaryDirectory(prefix=TMP_PREFIX) as tmp:
                return run.execute(cfg, out_dir=Path(tmp) / "run")
        if stage == "build":
            run.build(cfg)

    return Case(id, "config", f"python experiments/run.py {overrides}", trigger, error, match)


# -- cases through the library API --------------------------------------------------------------------


#: The names an :func:`api` expression may use, as Python: docs/bad_inputs.md shows this code (and
#: the docs' tests run it), and :func:`namespace` runs it afresh for every case, so the two agree.
NAMESPACE_CODE = """\
import math, tempfile, torch, sde_gen as sg
from pathlib import Path
sde = sg.VPSDE()
def score(x, t): return -x                      # the exact score of N(0, I) data under sde
x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)  # data
t = torch.full((4,), 0.5, dtype=torch.float64)  # times
solver = sg.EulerMaruyama(steps=2)
ode = sg.ProbabilityFlow("rk4", steps=2)
net = sg.MLP(2, hidden=8, depth=1, embed_dim=8)  # float32 parameters
data = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))  # float32 training data
lp = torch.zeros(4, dtype=torch.float64)         # log-densities
mix = sg.gmm8()                                  # 8 labelled Gaussians in 2-D (labels 0..7, null 8)
y = torch.tensor([0, 1, 2, 3])                   # labels
workdir = tempfile.TemporaryDirectory()          # removed with workdir (a case gets its own)
tmp = Path(workdir.name)                         # a fresh temporary directory
def garbage(path):                               # 16 bytes that are no valid file of any kind
    path.write_bytes(b"not a real file\\n")
    return path
"""


def namespace(tmp: Path) -> dict:
    """The names an :func:`api` expression may use (a fresh set for every case): :data:`NAMESPACE_CODE`
    run, with ``tmp`` the case's temporary directory."""
    names: dict = {}
    exec(compile(NAMESPACE_CODE, "<bad inputs namespace>", "exec"), names)
    names.pop("workdir").cleanup()
    names["tmp"] = tmp
    return names


NAMESPACE_DOC = f"```python\n{NAMESPACE_CODE}```"


def api(id: str, category: str, code: str, error, match: str) -> Case:
    """The Python expression ``code``, evaluated in :func:`namespace`."""
    compiled = compile(code, f"<bad input {id}>", "eval")

    def trigger():
        with tempfile.TemporaryDirectory(prefix=TMP_PREFIX) as tmp:
            return eval(compiled, namespace(Path(tmp)))

    return Case(id, category, code, trigger, error, match)


# -- the cases ----------------------------------------------------------------------------------------

_METHODS = r"\['adaptive_heun', 'bosh3', 'dopri5', 'dopri8', 'euler', 'fehlberg2', 'heun2', 'heun3', "
_METHODS += r"'midpoint', 'rk4'\]"
_PREDICTORS = r"\['ancestral', 'euler_maruyama', 'reverse_diffusion'\]"
_CORRECTORS = r"\['annealed_langevin', 'langevin', 'none'\]"


def _cases() -> list[Case]:
    from hydra.errors import ConfigCompositionException as Compose
    from hydra.errors import InstantiationException as Instantiate
    from hydra.errors import MissingConfigException as Missing

    from sde_gen import CheckpointError

    ConfigError = _run_module().ConfigError
    return [
        # -- config values through experiments/run.py: Hydra's schema, then the objects run.build makes
        cli(
            "cfg-lr-negative",
            "train.lr=-1",
            ConfigError,
            r"^train\.lr=-1\.0 is not allowed: Invalid learning rate: -1\.0",
        ),
        cli(
            "cfg-lr-not-a-number",
            "train.lr=abc",
            Compose,
            r"train\.lr=abc.*'abc'.*could not be converted to Float",
        ),
        cli(
            "cfg-steps-negative",
            "train.steps=-5",
            ConfigError,
            r"^train\.steps=-5 is not allowed: steps must be >= 0, got -5",
        ),
        cli(
            "cfg-steps-float",
            "train.steps=1.5",
            Compose,
            r"train\.steps=1\.5.*'1\.5'.*could not be converted to Integer",
        ),
        cli(
            "cfg-batch-size-zero",
            "train.batch_size=0",
            ConfigError,
            r"^train\.batch_size=0 is not allowed: batch_size must be >= 1, got 0",
        ),
        cli(
            "cfg-ema-decay-one",
            "train.ema_decay=1.0",
            ConfigError,
            r"^train\.ema_decay=1\.0 is not allowed: decay must be in \[0, 1\), got 1\.0",
        ),
        cli(
            "cfg-weighting-unknown",
            "train.weighting=l2",
            ConfigError,
            r"^train\.weighting='l2' is not allowed: weighting must be one of "
            r"\['edm', 'flow', 'likelihood', 'min_snr', 'sigmoid', 'std2'\], got 'l2'",
        ),
        cli(
            "cfg-importance-sampling-std2",
            "train.importance_sampling=true train.weighting=std2 train.time_sampler=uniform",
            ConfigError,
            r"^train\.importance_sampling=True is not allowed: "
            r"importance_sampling=True needs weighting='likelihood', got weighting=",
        ),
        cli(
            "cfg-min-snr-gamma-negative",
            "train.weighting=min_snr train.min_snr_gamma=-1 train.importance_sampling=false",
            ConfigError,
            r"^train\.min_snr_gamma=-1\.0 is not allowed: min_snr_gamma must be > 0, got -1\.0",
        ),
        cli(
            "cfg-sigmoid-bias-infinite",
            "train.weighting=sigmoid train.sigmoid_bias=inf train.importance_sampling=false",
            ConfigError,
            r"^train\.sigmoid_bias=inf is not allowed: sigmoid_bias must be finite, got inf",
        ),
        cli(
            "cfg-weighting-sigma-data-negative",
            "train.weighting=edm train.sigma_data=-0.5 train.importance_sampling=false",
            ConfigError,
            r"^train\.sigma_data=-0\.5 is not allowed: sigma_data must be > 0, got -0\.5",
        ),
        cli(
            "cfg-parameterization-unknown",
            "train.parameterization=eps",
            ConfigError,
            r"^train\.parameterization='eps' is not allowed: parameterization must be one of "
            r"\['data', 'edm', 'flow', 'noise', 'score', 'v'\], got 'eps'",
        ),
        cli(
            "cfg-parameterization-sigma-data-zero",
            "train.parameterization=edm train.sigma_data=0",
            ConfigError,
            r"^train\.sigma_data=0\.0 is not allowed: sigma_data must be > 0, got 0\.0",
        ),
        cli(
            "cfg-time-sampler-unknown",
            "train.time_sampler=lognormal",
            ConfigError,
            r"^train\.time_sampler='lognormal' is not allowed: time_sampler must be one of "
            r"\['importance', 'log_normal', 'logit_normal', 'uniform'\], got 'lognormal'",
        ),
        cli(
            "cfg-coupling-unknown",
            "train.coupling=sinkhorn",
            ConfigError,
            r"^train\.coupling='sinkhorn' is not allowed: coupling must be one of \['independent', 'ot'\], "
            r"got 'sinkhorn'",
        ),
        cli(
            "cfg-time-sampler-with-importance-sampling",
            "train.time_sampler=log_normal train.weighting=likelihood train.importance_sampling=true",
            ConfigError,
            r"^train\.importance_sampling=True is not allowed: false with train\.time_sampler='log_normal': "
            r"importance sampling draws the times itself",
        ),
        cli(
            "cfg-time-sampler-scale-zero",
            "train.time_sampler=log_normal train.time_sampler_scale=0 train.importance_sampling=false",
            ConfigError,
            r"^train\.time_sampler_scale=0\.0 is not allowed: p_std must be > 0, got 0\.0",
        ),
        cli(
            "cfg-time-sampler-loc-of-uniform",
            "train.time_sampler_loc=0.5 train.time_sampler=uniform",
            ConfigError,
            r"^train\.time_sampler_loc=0\.5 is not allowed: null: time_sampler='uniform' has no loc",
        ),
        cli(
            "cfg-train-eps-ge-T",
            "train.eps=1.0",
            ConfigError,
            r"^train\.eps=1\.0 is not allowed: eps must be in the open interval \(0, T\) = \(0, 1\.0\)",
        ),
        cli(
            "cfg-solver-steps-zero",
            "solver.steps=0",
            ConfigError,
            r"^solver\.steps=0 is not allowed: steps must be >= 1, got 0",
        ),
        cli(
            "cfg-divergence-unknown",
            "likelihood.divergence=foo",
            ConfigError,
            r"^likelihood\.divergence='foo' is not allowed: divergence must be one of \['auto', 'exact', "
            r"'hutchinson'\]",
        ),
        cli(
            "cfg-seed-negative", "seed=-1", ConfigError, r"^seed=-1 is not allowed: seed must be >= 0, got -1"
        ),
        cli(
            "cfg-mode-unknown",
            "mode=foo",
            Compose,
            r"mode=foo.*Invalid value 'foo', expected one of "
            r"\[train, sample, likelihood, all, evaluate, reflow\]",
        ),
        cli(
            "cfg-unknown-key",
            "train.foo=1",
            Compose,
            r"Could not override 'train\.foo'.*Key 'foo' not in 'TrainConfig'",
        ),
        cli(
            "cfg-solver-unknown",
            "solver=foo",
            Missing,
            r"Could not find 'solver/foo'.*Available options in 'solver':"
            r"\s+ddim\s+dpmpp\s+em\s+heun\s+ipndm\s+ode\s+pc\s+unipc\b",
        ),
        cli(
            "cfg-sde-unknown",
            "sde=vpsde",
            Missing,
            r"Could not find 'sde/vpsde'.*Available options in 'sde':"
            r"\s+cosine_vp\s+edm\s+rectified_flow\s+subvp\s+ve\s+vp\b",
        ),
        cli(
            "cfg-ckpt-missing",
            "ckpt=/nonexistent.pt",
            ConfigError,
            r"^ckpt='/nonexistent\.pt' is not allowed: the path of an existing checkpoint",
        ),
        cli(
            "cfg-sample-without-checkpoint",
            "mode=sample",
            ConfigError,
            r"^mode='sample' is not allowed: needs ckpt=PATH or a trained run in hydra\.run\.dir "
            r"\(no <tmp>/run/checkpoints\)",
            stage="execute",
        ),
        cli(
            "cfg-sde-T-zero",
            "sde.T=0",
            ConfigError,
            r"^sde\.T=0 is not allowed: T must be > 0, got 0\.0",
            stage="build",
        ),
        cli(
            "cfg-ve-sigmas-swapped",
            "sde=ve sde.sigma_min=100",
            ConfigError,
            r"^sde\.sigma_max=50\.0 is not allowed: sigma_max must be > sigma_min, got sigma_min=100, "
            r"sigma_max=50\.0",
            stage="build",
        ),
        cli(
            "cfg-ode-method-unknown",
            "solver=ode solver.method=rk45",
            ConfigError,
            rf"^solver\.method='rk45' is not allowed: method must be one of {_METHODS}, got 'rk45'",
            stage="build",
        ),
        cli(
            "cfg-ode-fixed-grid-without-steps",
            "solver=ode solver.method=rk4",
            ConfigError,
            r"^solver\.steps=None is not allowed: steps is required for the fixed-grid method 'rk4'",
            stage="build",
        ),
        cli(
            "cfg-predictor-unknown",
            "solver=pc solver.predictor=heun",
            ConfigError,
            rf"^solver\.predictor='heun' is not allowed: predictor must be one of {_PREDICTORS}",
            stage="build",
        ),
        cli(
            "cfg-corrector-unknown",
            "solver=pc solver.corrector=langevine",
            ConfigError,
            rf"^solver\.corrector='langevine' is not allowed: corrector must be one of {_CORRECTORS}",
            stage="build",
        ),
        cli(
            "cfg-model-data-mismatch",
            "model=unet_mnist data=digits",
            ConfigError,
            r"^model expects images of shape \(1, 28, 28\) but data=digits has \(1, 8, 8\)",
            stage="build",
        ),
        cli(
            "cfg-image-model-vector-data",
            "data=gmm8",
            ConfigError,
            r"^model=sde_gen\.UNet\.digits is an image network but data=gmm8 is vector data",
            stage="build",
        ),
        cli(
            "cfg-vector-model-image-data",
            "model=mlp",
            ConfigError,
            r"^model='sde_gen\.MLP' is not allowed: a model for images \(data=digits is an image set\)",
            stage="build",
        ),
        cli(
            "cfg-mnist-root-missing",
            "experiment=mnist data.root=/nonexistent/mnist",
            Instantiate,
            r"MNIST: expected the files train-images-idx3-ubyte, .*t10k-labels-idx1-ubyte .* "
            r"in one of: /nonexistent/mnist,",
            stage="build",
        ),
        cli(
            "cfg-data-name-unknown",
            "data.name=imagenet",
            ConfigError,
            r"^data\.name='imagenet' is not allowed: name must be one of \[.*'digits'.*\], got 'imagenet'",
            stage="build",
        ),
        cli(
            "cfg-n-test-too-large",
            "data.n_test=5000",
            ConfigError,
            r"^data\.n_test=5000 is not allowed: n_test must be < 1797 \(the number of digits images\)",
            stage="build",
        ),
        cli(
            "cfg-sample-eps-equals-T",
            "sample.eps=1.0",
            ConfigError,
            r"^sample\.eps=1\.0 is not allowed: eps must be in the open interval \(0, T\) = \(0, 1\.0\)",
        ),
        cli(
            "cfg-train-eps-beyond-T",
            "sde.T=0.5 train.eps=0.7",
            ConfigError,
            r"^train\.eps=0\.7 is not allowed: eps must be in the open interval \(0, T\) = \(0, 0\.5\)",
        ),
        cli(
            "cfg-unknown-key-appended",
            "+train.learning_rate=1e-3",
            ConfigError,
            r"^train\.learning_rate=0\.001 is not allowed: a key of train: \[.*'lr'",
        ),
        cli(
            "cfg-likelihood-fixed-grid-without-steps",
            "likelihood.method=rk4",
            ConfigError,
            r"^likelihood\.steps=None is not allowed: steps is required for the fixed-grid method 'rk4'",
        ),
        cli(
            "cfg-likelihood-method-unknown",
            "likelihood.method=rk45",
            ConfigError,
            r"^likelihood\.method='rk45' is not allowed: method must be one of \[.*'dopri5'.*'rk4'\]",
        ),
        cli(
            "cfg-nonfinite-unknown",
            "train.nonfinite=ignore",
            ConfigError,
            r"^train\.nonfinite='ignore' is not allowed: nonfinite must be one of \['raise', 'skip'\]",
        ),
        cli(
            "cfg-device-unknown",
            "device=gpu",
            ConfigError,
            r"^device='gpu' is not allowed: one of \['auto', 'cpu', 'cuda'\]",
        ),
        cli(
            "cfg-steps-absurd",
            "train.steps=1000000000000000",
            ConfigError,
            r"^train\.steps=1000000000000000 is not allowed: steps must be <= 99999999 \(checkpoint names "
            r"hold 8 digits\)",
        ),
        cli(
            "cfg-batch-size-absurd",
            "train.batch_size=1000000000",
            ConfigError,
            r"^train\.batch_size=1000000000 is not allowed: batch_size must be <= 1497",
        ),
        cli(
            "cfg-likelihood-n-too-large",
            "likelihood.n=5000",
            ConfigError,
            r"^likelihood\.n=5000 is not allowed: at most 300, the size of the test set of digits",
        ),
        cli(
            "cfg-mlp-dim-mismatch",
            "experiment=gmm8 model.dim=3",
            ConfigError,
            r"^model\.dim=3 is not allowed: null or 2, the dimension of data=gmm8",
            stage="build",
        ),
        cli(
            "cfg-cosine-vp-T-beyond-clip",
            "sde=cosine_vp sde.T=1.0",
            ConfigError,
            r"^sde\.T=1\.0 is not allowed: T must be <= 0\.99799\d*, the time where beta\(t\) reaches "
            r"beta_max=999\.0",
            stage="build",
        ),
        # -- SDEs --------------------------------------------------------------------------------------------
        api(
            "vp-beta-min-negative",
            "SDE",
            "sg.VPSDE(beta_min=-0.1)",
            ValueError,
            r"^beta_min must be >= 0\.0, got -0\.1",
        ),
        api(
            "vp-betas-swapped",
            "SDE",
            "sg.VPSDE(beta_min=20.0, beta_max=0.1)",
            ValueError,
            r"^beta_max must be >= beta_min, got beta_min=20\.0, beta_max=0\.1",
        ),
        api(
            "ve-sigma-min-zero",
            "SDE",
            "sg.VESDE(sigma_min=0.0)",
            ValueError,
            r"^sigma_min must be > 0, got 0\.0",
        ),
        api(
            "sde-T-string",
            "SDE",
            'sg.SubVPSDE(T="1")',
            TypeError,
            r"^T must be a real number, got '1' \(str\)",
        ),
        api("linear-sde-g-zero", "SDE", "sg.LinearSDE(-1.0, 0.0)", ValueError, r"^g must be > 0, got 0\.0"),
        api(
            "cosine-vp-T-one",
            "SDE",
            "sg.CosineVPSDE(T=1.0)",
            ValueError,
            r"^T must be <= 0\.99799\d*, the time where beta\(t\) reaches beta_max=999\.0 \(beta is "
            r"infinite at t = 1\), got 1\.0",
        ),
        api(
            "cosine-vp-beta-max-below-beta0",
            "SDE",
            "sg.CosineVPSDE(beta_max=0.01)",
            ValueError,
            r"^beta_max must be > beta\(0\) = 0\.0388563 .*got 0\.01",
        ),
        api(
            "edm-sigma-max-zero",
            "SDE",
            "sg.EDMSDE(sigma_max=0.0)",
            ValueError,
            r"^sigma_max must be > 0, got 0\.0",
        ),
        # -- solvers -----------------------------------------------------------------------------------------
        api(
            "pc-predictor-unknown",
            "solver",
            'sg.PredictorCorrector(steps=10, predictor="heun")',
            ValueError,
            rf"^predictor must be one of {_PREDICTORS} or a Predictor, got 'heun'",
        ),
        api(
            "pc-corrector-unknown",
            "solver",
            'sg.PredictorCorrector(steps=10, corrector="langevine")',
            ValueError,
            rf"^corrector must be one of {_CORRECTORS} or a Corrector, got 'langevine'",
        ),
        api(
            "ode-method-unknown",
            "solver",
            'sg.ProbabilityFlow("rk45")',
            ValueError,
            rf"^method must be one of {_METHODS}, got 'rk45'",
        ),
        api(
            "ode-fixed-grid-without-steps",
            "solver",
            'sg.ProbabilityFlow("rk4")',
            ValueError,
            r"^steps is required for the fixed-grid method 'rk4', got None",
        ),
        api(
            "ode-adaptive-with-steps",
            "solver",
            'sg.ProbabilityFlow("dopri5", steps=10)',
            ValueError,
            r"^steps=10 is only for fixed-grid methods .*'dopri5' is adaptive",
        ),
        api(
            "em-steps-zero", "solver", "sg.EulerMaruyama(steps=0)", ValueError, r"^steps must be >= 1, got 0"
        ),
        api(
            "em-steps-float",
            "solver",
            "sg.EulerMaruyama(steps=2.5)",
            TypeError,
            r"^steps must be an int, got 2\.5 \(float\)",
        ),
        api(
            "langevin-snr-negative",
            "solver",
            "sg.Langevin(snr=-0.1)",
            ValueError,
            r"^snr must be > 0, got -0\.1",
        ),
        api(
            "dpmpp-order",
            "solver",
            "sg.DPMSolverPlusPlus(steps=10, order=4)",
            ValueError,
            r"^order must be one of \[1, 2, 3\] for DPMSolverPlusPlus, got 4",
        ),
        api(
            "dpmpp-too-few-steps",
            "solver",
            "sg.DPMSolverPlusPlus(steps=2, order=3)",
            ValueError,
            r"^steps must be >= 3 \(order=3 needs 2 lower-order warm-up step\(s\) before one of order 3\), "
            r"got 2",
        ),
        api(
            "dpmpp-stochastic-order",
            "solver",
            "sg.DPMSolverPlusPlus(steps=10, order=3, stochastic=True)",
            ValueError,
            r"^order=3 is not available with stochastic=True",
        ),
        api(
            "ddim-eta", "solver", "sg.DDIM(steps=10, eta=-0.5)", ValueError, r"^eta must be >= 0.0, got -0.5"
        ),
        api(
            "unipc-variant",
            "solver",
            'sg.UniPC(steps=10, variant="bh3")',
            ValueError,
            r"^variant must be one of \['bh1', 'bh2'\], got 'bh3'",
        ),
        api(
            "heun-churn",
            "solver",
            "sg.Heun(steps=10, churn=-1.0)",
            ValueError,
            r"^churn must be >= 0.0, got -1.0",
        ),
        api(
            "cond-label-range",
            "conditioning",
            'sg.sample(sde, mix.conditional_score_fn(sde), (4, 2), sg.DDIM(5), cond={"y": y + 6})',
            ValueError,
            r"^y must hold labels in 0..7, or 8 for unconditional \(the mixture has K=8 components\), "
            r"got \[9\]",
        ),
        api(
            "cond-length",
            "conditioning",
            'sg.sample(sde, mix.conditional_score_fn(sde), (4, 2), sg.DDIM(5), cond={"y": y[:2]})',
            ValueError,
            r"^cond\['y'\] has 2 rows, but the batch has 4 samples",
        ),
        api(
            "cond-float-labels",
            "conditioning",
            'sg.sample(sde, mix.conditional_score_fn(sde), (4, 2), sg.DDIM(5), cond={"y": y.float()})',
            TypeError,
            r"^cond\['y'\] holds class labels and must be an integer tensor",
        ),
        api(
            "cond-unconditional-score",
            "conditioning",
            'sg.sample(sde, score, (4, 2), sg.DDIM(5), cond={"y": y})',
            TypeError,
            r"does not accept the conditioning keyword\(s\) \['y'\]",
        ),
        api(
            "cfg-w-nan",
            "conditioning",
            'sg.classifier_free_guidance(mix.conditional_score_fn(sde), float("nan"), null=8)',
            ValueError,
            r"^w must be finite, got nan",
        ),
        api(
            "classifier-guidance-scale",
            "conditioning",
            'sg.classifier_guidance(score, mix.classifier_fn(sde), float("inf"))',
            ValueError,
            r"^scale must be finite, got inf",
        ),
        api(
            "inverse-mask-shape",
            "inverse",
            "sg.solve_inverse(sde, score, x, sg.Mask(torch.ones(3)), sg.DDIM(5, eta=1.0))",
            ValueError,
            r"^mask has shape \(3,\) but one sample of x has shape \(2,\)",
        ),
        api(
            "inverse-method",
            "inverse",
            'sg.solve_inverse(sde, score, x, sg.Mask(torch.tensor([1.0, 0.0])), solver, method="magic")',
            ValueError,
            r"^method must be one of \['dps', 'repaint', 'replacement', 'smc'\], got 'magic'",
        ),
        api(
            "inverse-noise-std",
            "inverse",
            "sg.solve_inverse(sde, score, x, sg.Mask(torch.tensor([1.0, 0.0])), solver, noise_std=-1.0)",
            ValueError,
            r"^noise_std must be >= 0.0, got -1.0",
        ),
        api(
            "superresolution-factor",
            "inverse",
            "sg.SuperResolution(3)(torch.zeros(2, 1, 8, 8))",
            ValueError,
            r"^SuperResolution\(factor=3\) needs samples \(..., H, W\) with H and W divisible by 3",
        ),
        api(
            "keyed-noise-seed",
            "sampling",
            "sg.KeyedNoise(seed=-1)",
            ValueError,
            r"^seed must be >= 0, got -1",
        ),
        api(
            "schedule-unknown",
            "solver",
            'sg.EulerMaruyama(steps=10, schedule="cosine")',
            ValueError,
            r"^schedule must be one of \['time_uniform', 'time_quadratic', 'log_snr', 'edm'.*\] or a 1-D "
            r"tensor of times, got 'cosine'",
        ),
        api(
            "schedule-not-decreasing",
            "solver",
            "sg.EulerMaruyama(schedule=[1.0, 0.5, 0.5, 1e-3])",
            ValueError,
            r"^an explicit schedule must decrease strictly .*time 2 \(0\.5\) is not below time 1 \(0\.5\)",
        ),
        api(
            "schedule-2d",
            "solver",
            "sg.EulerMaruyama(schedule=torch.ones(2, 3))",
            ValueError,
            r"^an explicit schedule must be a 1-D tensor of at least 2 times, got shape \(2, 3\)",
        ),
        api(
            "schedule-nan",
            "solver",
            "sg.EulerMaruyama(schedule=[1.0, math.nan, 1e-3])",
            ValueError,
            r"^an explicit schedule must hold finite times, got \[1\.0, nan, 0\.001\]",
        ),
        api(
            "schedule-steps-mismatch",
            "solver",
            "sg.EulerMaruyama(steps=5, schedule=[1.0, 0.5, 1e-3])",
            ValueError,
            r"^steps=5 but the explicit schedule has 3 times \(2 steps\)",
        ),
        api(
            "ode-adaptive-with-schedule",
            "solver",
            'sg.ProbabilityFlow("dopri5", schedule="edm")',
            ValueError,
            r"^schedule='edm' is only for fixed-grid methods \[.*\]; 'dopri5' is adaptive",
        ),
        # -- sampling ----------------------------------------------------------------------------------------
        api(
            "sample-eps-equals-T",
            "sampling",
            "sg.sample(sde, score, (4, 2), solver, eps=1.0)",
            ValueError,
            r"^eps must be in the open interval \(0, T\) = \(0, 1\.0\), got 1\.0",
        ),
        api(
            "sample-eps-zero",
            "sampling",
            "sg.sample(sde, score, (4, 2), solver, eps=0)",
            ValueError,
            r"^eps must be in the open interval \(0, T\) = \(0, 1\.0\), got 0\.0",
        ),
        api(
            "sample-eps-beyond-T",
            "sampling",
            "sg.sample(sg.VESDE(T=2.0), score, (4, 2), solver, eps=2.5)",
            ValueError,
            r"^eps must be in the open interval \(0, T\) = \(0, 2\.0\), got 2\.5",
        ),
        api(
            "sample-solver-name",
            "sampling",
            'sg.sample(sde, score, (4, 2), "euler_maruyama")',
            TypeError,
            r"^solver must be an sde_gen Solver .*got 'euler_maruyama'",
        ),
        api(
            "sample-shape-zero",
            "sampling",
            "sg.sample(sde, score, (4, 0), solver)",
            ValueError,
            r"^shape must be a non-empty tuple of positive ints \(B, \.\.\.\), got \(4, 0\)",
        ),
        api(
            "sample-integer-dtype",
            "sampling",
            "sg.sample(sde, score, (4, 2), solver, dtype=torch.long)",
            TypeError,
            r"^dtype must be a floating-point torch\.dtype .*got torch\.int64",
        ),
        api(
            "sample-x_T-shape",
            "sampling",
            "sg.sample(sde, score, (4, 2), solver, x_T=torch.zeros(4, 3))",
            ValueError,
            r"^x_T has shape \(4, 3\), but shape is \(4, 2\)",
        ),
        api(
            "sample-x_T-integer",
            "sampling",
            "sg.sample(sde, score, (4, 2), solver, x_T=torch.zeros(4, 2, dtype=torch.long))",
            TypeError,
            r"^x_T must be a floating-point tensor, got dtype torch\.int64",
        ),
        api(
            "sample-grid-not-from-T",
            "sampling",
            "sg.sample(sde, score, (4, 2), sg.EulerMaruyama(schedule=[0.5, 0.1, 1e-3]))",
            ValueError,
            r"^an explicit schedule must run from t_start=1 \(T\) down to t_end=0\.001 \(the end time, "
            r"eps\), to 1e-6 relative; got times from 0\.5 to 0\.001",
        ),
        api(
            "sample-generator-seed",
            "sampling",
            "sg.sample(sde, score, (4, 2), solver, generator=0)",
            TypeError,
            r"^generator must be a torch\.Generator or None, got int",
        ),
        # -- likelihood --------------------------------------------------------------------------------------
        api(
            "loglik-eps-equals-T",
            "likelihood",
            "sg.log_likelihood(sde, score, x, eps=1.0, solver=ode)",
            ValueError,
            r"^eps must be in the open interval \(0, T\) = \(0, 1\.0\), got 1\.0",
        ),
        api(
            "loglik-eps-negative",
            "likelihood",
            "sg.log_likelihood(sde, score, x, eps=-1e-5, solver=ode)",
            ValueError,
            r"^eps must be in the open interval \(0, T\) = \(0, 1\.0\), got -1e-05",
        ),
        api(
            "loglik-integer-x",
            "likelihood",
            "sg.log_likelihood(sde, score, x.long(), solver=ode)",
            TypeError,
            r"^x must be a floating-point tensor, got dtype torch\.int64",
        ),
        api(
            "loglik-divergence-unknown",
            "likelihood",
            'sg.log_likelihood(sde, score, x, divergence="trace", solver=ode)',
            ValueError,
            r"^divergence must be one of \['exact', 'hutchinson'\], got 'trace'",
        ),
        api(
            "loglik-stochastic-solver",
            "likelihood",
            "sg.log_likelihood(sde, score, x, solver=solver)",
            TypeError,
            r"^solver must be a ProbabilityFlow, got EulerMaruyama\(steps=2, schedule=None\)",
        ),
        api(
            "loglik-num-probes-zero",
            "likelihood",
            'sg.log_likelihood(sde, score, x, divergence="hutchinson", num_probes=0, solver=ode)',
            ValueError,
            r"^num_probes must be >= 1, got 0",
        ),
        api(
            "encode-eps-equals-T",
            "likelihood",
            "sg.encode(sde, score, x, eps=1.0, solver=ode)",
            ValueError,
            r"^eps must be in the open interval \(0, T\) = \(0, 1\.0\), got 1\.0",
        ),
        api(
            "bpd-levels-one",
            "likelihood",
            "sg.bits_per_dim(lp, 784, levels=1)",
            ValueError,
            r"^levels must be >= 2, got 1",
        ),
        api(
            "bpd-levels-float",
            "likelihood",
            "sg.bits_per_dim(lp, 784, levels=255.5)",
            TypeError,
            r"^levels must be an int, got 255\.5 \(float\)",
        ),
        api(
            "bpd-high-below-low",
            "likelihood",
            "sg.bits_per_dim(lp, 784, low=1.0, high=-1.0)",
            ValueError,
            r"^high must be > low, got low=1\.0, high=-1\.0",
        ),
        # -- score functions ---------------------------------------------------------------------------------
        api(
            "score-wrong-shape",
            "score function",
            "sg.sample(sde, lambda x, t: x[:, :1], (4, 2), solver)",
            ValueError,
            r"^score_fn returned shape \(4, 1\) for x of shape \(4, 2\)",
        ),
        api(
            "score-wrong-dtype",
            "score function",
            "sg.log_likelihood(sde, lambda x, t: -x.float(), x, solver=ode)",
            TypeError,
            r"^score_fn returned dtype torch\.float32 on cpu for x of dtype torch\.float64",
        ),
        api(
            "score-nan",
            "score function",
            "sg.sample(sde, lambda x, t: -x * torch.tensor([1, math.nan, 1, 1])[:, None], (4, 2), solver)",
            FloatingPointError,
            r"^score_fn output is not finite at t=1 for 1 of 4 samples \(indices \[1\]\)",
        ),
        api(
            "score-not-callable",
            "score function",
            'sg.sample(sde, "score", (4, 2), solver)',
            TypeError,
            r"^score_fn must be callable as score_fn\(x, t\), got str",
        ),
        api(
            "score-one-argument",
            "score function",
            "sg.sample(sde, lambda x: -x, (4, 2), solver)",
            TypeError,
            r"^score_fn must be callable as score_fn\(x, t\) with two positional arguments, "
            r"got <lambda>\(x\)",
        ),
        api(
            "score-returns-numpy",
            "score function",
            "sg.encode(sde, lambda x, t: (-x).numpy(), x, solver=ode)",
            TypeError,
            r"^score_fn must return a torch\.Tensor, got ndarray",
        ),
        api(
            "dsm-score-wrong-shape",
            "score function",
            "sg.dsm_loss(sde, lambda x, t: x.sum(1, keepdim=True), x)",
            ValueError,
            r"^score_fn returned shape \(4, 1\) for x of shape \(4, 2\)",
        ),
        # -- training ----------------------------------------------------------------------------------------
        api(
            "dsm-weighting-unknown",
            "training",
            'sg.dsm_loss(sde, score, x, weighting="l2")',
            ValueError,
            r"^weighting must be one of "
            r"\['edm', 'flow', 'likelihood', 'min_snr', 'sigmoid', 'std2'\], got 'l2'",
        ),
        api(
            "dsm-eps-equals-T",
            "training",
            "sg.dsm_loss(sde, score, x, eps=1.0)",
            ValueError,
            r"^eps must be in the open interval \(0, T\) = \(0, 1\.0\), got 1\.0",
        ),
        api(
            "batches-batch-size-zero",
            "training",
            "sg.Batches(data, batch_size=0)",
            ValueError,
            r"^batch_size must be >= 1, got 0",
        ),
        api(
            "schedule-warmup-negative",
            "training",
            "sg.WarmupCosine(warmup=-5)",
            ValueError,
            r"^warmup must be >= 0, got -5",
        ),
        api(
            "ema-decay-one",
            "training",
            "sg.EMA(net, decay=1.0)",
            ValueError,
            r"^decay must be in \[0, 1\), got 1\.0",
        ),
        api(
            "loss-importance-sampling-std2",
            "training",
            "sg.DSMLoss(sde, importance_sampling=True)",
            ValueError,
            r"^importance_sampling=True needs weighting='likelihood', got weighting='std2'",
        ),
        api(
            "loss-sde-name",
            "training",
            'sg.DSMLoss("vp")',
            TypeError,
            r"^sde must be an instance of sde_gen\.SDE, got str",
        ),
        api(
            "loss-eps-equals-T",
            "training",
            "sg.DSMLoss(sde, eps=1.0)",
            ValueError,
            r"^eps must be in the open interval \(0, T\) = \(0, 1\.0\), got 1\.0",
        ),
        api(
            "batches-data-list",
            "training",
            "sg.Batches([[0.0, 1.0]])",
            TypeError,
            r"^data must be a torch\.Tensor of shape \(N, \.\.\.\), got list",
        ),
        api(
            "trainer-nonfinite-unknown",
            "training",
            'sg.Trainer(net, sg.DSMLoss(sde), data, nonfinite="ignore")',
            ValueError,
            r"^nonfinite must be one of .*'raise'.*'skip'.*got 'ignore'",
        ),
        api(
            "trainer-old-signature",
            "training",
            "sg.Trainer(net, sde, data)",
            TypeError,
            r"^loss_fn must be a loss, got the SDE VPSDE: since sde_gen 0\.2 .*loss_fn=sg\.DSMLoss\(sde\)",
        ),
        api(
            "checkpoint-corrupt",
            "training",
            'sg.Trainer(net, sg.DSMLoss(sde), data).load_checkpoint(garbage(tmp / "ckpt_00000001.pt"))',
            CheckpointError,
            r"^checkpoint <tmp>/ckpt_00000001\.pt cannot be read \(UnpicklingError: "
            r".*not a sde_gen checkpoint",
        ),
        api(
            "checkpoint-needs-unpickling",
            "training",
            '(torch.save({"sde": sde}, tmp / "old.pt"), '
            'sg.Trainer(net, sg.DSMLoss(sde), data).load_checkpoint(tmp / "old.pt"))',
            CheckpointError,
            r"^checkpoint <tmp>/old\.pt cannot be read safely: it refers to sde_gen\.sdes\.base\.VPSDE, .*"
            r"sde_gen never unpickles code from a file"
            r".*python -m sde_gen\.files\.convert <tmp>/old\.pt NEW\.pt",
        ),
        api(
            "model-file-of-own-sde",
            "training",
            'sg.load_model(sg.save_model(tmp / "m.safetensors", sg.ScoreModel(net, sg.LinearSDE(-1.0, 1.0)), '
            'sde_config={"_target_": "mine.OU"}))',
            CheckpointError,
            r"^model file <tmp>/m\.safetensors names sde 'mine\.OU'; a model file can only name "
            r"\[.*\]; pass sde= for an SDE of your own$",
        ),
        api(
            "model-file-sde-not-an-sde",
            "training",
            'sg.load_model(sg.save_model(tmp / "m.safetensors", sg.ScoreModel(net, sde)), sde="vp")',
            TypeError,
            r"^sde must be a sde_gen\.SDE, got str$",
        ),
        # -- networks ----------------------------------------------------------------------------------------
        api(
            "net-float64-input",
            "network",
            "net(x, t)",
            TypeError,
            r"^x has dtype torch\.float64 but the network's parameters are torch\.float32",
        ),
        api(
            "net-wrong-dim",
            "network",
            "net(torch.zeros(4, 3), t.float())",
            ValueError,
            r"^x must have 2 entries per sample \(dim\), got shape \(4, 3\)",
        ),
        api(
            "net-t-wrong-shape",
            "network",
            "net(x.float(), torch.full((3,), 0.5))",
            ValueError,
            r"^t must have shape \(B,\) = \(4,\) to match x, got \(3,\)",
        ),
        api(
            "mlp-time-embedding-unknown",
            "network",
            'sg.MLP(2, time_embedding="learned")',
            ValueError,
            r"^time_embedding must be one of \['fourier', 'sinusoidal'\], got 'learned'",
        ),
        api(
            "unet-odd-channels",
            "network",
            "sg.UNet(in_channels=1, image_size=8, channels=7)",
            ValueError,
            r"^channels must be even .*got 7",
        ),
        api(
            "score-model-parameterization",
            "network",
            'sg.ScoreModel(net, sde, parameterization="eps")',
            ValueError,
            r"^parameterization must be one of \['data', 'edm', 'flow', 'noise', 'score', 'v'\], got 'eps'",
        ),
        # -- data --------------------------------------------------------------------------------------------
        api(
            "mnist-files-missing",
            "data",
            'sg.load_dataset("mnist", root="/nonexistent/mnist")',
            FileNotFoundError,
            r"^MNIST: expected the files train-images-idx3-ubyte, train-labels-idx1-ubyte, "
            r"t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte .* in one of: "
            r"/nonexistent/mnist, /nonexistent/mnist/mnist, /nonexistent/mnist/MNIST/raw\.",
        ),
        api(
            "cifar10-files-missing",
            "data",
            'sg.load_dataset("cifar10", root="/nonexistent/cifar10")',
            FileNotFoundError,
            r"^CIFAR-10: expected the files data_batch_1, .*, test_batch in one of: "
            r"/nonexistent/cifar10/cifar-10-batches-py, /nonexistent/cifar10\.",
        ),
        api(
            "dataset-unknown",
            "data",
            'sg.load_dataset("imagenet")',
            ValueError,
            r"^name must be one of \['gmm8', .*'cifar10'\], got 'imagenet'",
        ),
        api(
            "dataset-mnist-extra-argument",
            "data",
            'sg.load_dataset("mnist", root="/nonexistent/mnist", n_test=100)',
            TypeError,
            r"^load_images\('mnist'\) takes only root, got \['n_test'\]",
        ),
        api(
            "digits-n-test-too-large",
            "data",
            'sg.load_dataset("digits", n_test=5000)',
            ValueError,
            r"^n_test must be < 1797 \(the number of digits images\), got 5000",
        ),
        api(
            "idx-file-corrupt",
            "data",
            'sg.data.read_idx(garbage(tmp / "train-images-idx3-ubyte"))',
            ValueError,
            r"^<tmp>/train-images-idx3-ubyte: bad IDX magic number 0x",
        ),
        api(
            "dequantize-float-levels",
            "data",
            "sg.LevelTransform(17).dequantize(torch.rand(2, 1, 8, 8))",
            TypeError,
            r"^k must be an integer tensor .*got dtype torch\.float32",
        ),
    ]


CASES: list[Case] = _cases()
CATEGORIES = (
    "config",
    "SDE",
    "solver",
    "sampling",
    "conditioning",
    "inverse",
    "likelihood",
    "score function",
    "training",
    "network",
    "data",
)


# -- the table ---------------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    """``text`` on one line as a markdown code span, ``|`` escaped for the table."""
    text = " ".join(text.split())
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 1].rstrip() + "…"
    tick = "``" if "`" in text else "`"
    pad = " " if tick == "``" else ""
    return f"{tick}{pad}{text}{pad}{tick}".replace("|", "\\|")


INTRO = f"""\
# Bad inputs and the errors they get

Every row below is a bad input, as a user would write it, and the error it gets: the exception
type and its actual message, shortened where it is long. Two kinds of row:

- **config**: a command line of `experiments/run.py`. The rows are run in-process the way run.py
  runs them: Hydra composes the config (its typed schema rejects wrong types and unknown keys), then
  `validate(cfg)` checks ranges and choices, then `build(cfg)` instantiates the data, SDE, network
  and solvers. On the command line, run.py prints a `ConfigError` as
  `run.py: invalid configuration: <message>` and exits with status 2; Hydra prints its own errors
  (wrong types, unknown options) and the library errors it wraps (`InstantiationException`).
- everything else: one Python expression against the library, evaluated with these names:

{NAMESPACE_DOC}

Paths are shown with the repository as `<repo>` and a temporary directory as `<tmp>`.

This file is generated; do not edit it by hand. The cases live in `tests/bad_inputs.py`, and
`{REGENERATE}` runs every one of them and writes what it raises (Hydra's
list of config search paths is left out). Every row is a test in `tests/test_bad_inputs_table.py`:
the case must raise the listed type with a message that names the offending argument, value or
file, and this file must equal the regenerated table. After adding a case or changing a message,
regenerate it.
"""


def render(outcomes: dict[str, Exception | None]) -> str:
    """docs/bad_inputs.md from the exception each case raised (``outcomes[case.id]``)."""
    lines = [INTRO, f"{len(CASES)} bad inputs.", ""]
    lines.append("| # | category | bad input | error type | message |")
    lines.append("|--:|---|---|---|---|")
    for i, case in enumerate(CASES, 1):
        exc = outcomes[case.id]
        kind = "no error" if exc is None else error_type(exc)
        msg = "" if exc is None else _cell(error_text(exc).split("\nConfig search path:")[0])  # Hydra's
        lines.append(f"| {i} | {case.category} | {_cell(case.bad_input)} | {kind} | {msg} |")
    return "\n".join(lines) + "\n"
