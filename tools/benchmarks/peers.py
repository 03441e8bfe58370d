"""The systems compared: nfzoo's flows and their equivalents in TFP and zuko (and, for NPE,
BayesFlow), at the benchmarks' common sizes, each wrapped in the trainer of its framework
(``timing``).

Density flows (train-throughput, density-throughput, density-quality, peak-memory):
  - nfzoo: ``nfzoo.build(arch, D, num_layers=5, hidden_units=[256, 256])``; ``nfzoo`` is XLA,
    ``nfzoo-graph`` ``compile(jit_compile=False)``, ``nfzoo-plain-matmul`` the same XLA flow
    with ``nfzoo.ops.SWAP_RATIO = inf`` while its step is traced, so that nfzoo.ops.matmul's
    kernel gradient is the plain product X^T dY (plain Keras matmul's);
  - TFP stock: ``tfb.MaskedAutoregressiveFlow(tfb.AutoregressiveNetwork(params=2, ...,
    activation="relu"))`` and ``tfb.RealNVP(D // 2, shift_and_log_scale_fn=
    tfb.real_nvp_default_template(...))`` (ReLU too), 5 of them with ``tfb.Permute`` reversals
    between, in a ``tfd.TransformedDistribution``; TFP has no stock spline flow;
  - zuko (PyTorch, CPU): ``zuko.flows.MAF(D, transforms=5, hidden_features=[256, 256])``,
    ``zuko.flows.RealNVP`` (zuko's NICE with affine couplings, alternating checkered masks) and
    ``zuko.flows.NSF`` (8 bins on [-5, 5] as nfzoo's; ``nsf-ar`` autoregressive, ``nsf`` with
    ``passes=2``, a coupling);
  - BayesFlow (``bayesflow``, in a worker process of its own interpreter,
    ``bayesflow_worker --mode density``): ``bf.networks.CouplingFlow(depth=ceil(5 / 2),
    transform="affine")`` beside realnvp, ``transform="spline"`` (8 bins, default domain
    [-5, 5]) beside nsf, subnets of the same widths; see ``BayesFlowTrainer`` for what is
    matched and what differs.

Glow (glow-throughput): nfzoo's ``GLOW_NFZOO`` and TFP's stock ``GLOW_TFP``.

NPE (npe): nfzoo's ``nfzoo.npe.build_npe_flow``, zuko's conditional NSF and MAF, and
BayesFlow's coupling flow in a worker process (``bayesflow_worker``).
"""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

import nfzoo

from .timing import NfzooTrainer, TfpTrainer, ZukoTrainer

#: BayesFlow's coupling flow, run by another interpreter (``--bayesflow-python``)
BAYESFLOW = "bayesflow"
TRAIN_SYSTEMS = ("nfzoo", "tfp-graph", "tfp-xla", "zuko")
ALL_SYSTEMS = ("nfzoo", "nfzoo-graph", "tfp-graph", "tfp-xla", "zuko", BAYESFLOW)
#: trained only: without a gradient it is nfzoo itself
PLAIN_MATMUL = "nfzoo-plain-matmul"
TRAINED_SYSTEMS = ("nfzoo", "nfzoo-graph", PLAIN_MATMUL, "tfp-graph", "tfp-xla", "zuko", BAYESFLOW)
TRAIN_BATCH = 512
TRAIN_LAYERS = 5
TRAIN_HIDDEN = [256, 256]
TRAIN_LR = 1e-3

#: the zuko flow of each nfzoo architecture: MAF, RealNVP (affine couplings), and NSF, zuko's
#: neural spline flow (8 bins on [-5, 5] as nfzoo's defaults), autoregressive (``nsf-ar``) or
#: with two passes, i.e. a coupling (``nsf``)
ZUKO_FLOWS = {
    "maf": ("MAF", {}),
    "realnvp": ("RealNVP", {}),
    "nsf": ("NSF", {"bins": 8, "passes": 2}),
    "nsf-ar": ("NSF", {"bins": 8}),
}
#: architectures TFP ships a stock flow of
TFP_ARCHS = ("maf", "realnvp")
#: the transform of BayesFlow's ``CouplingFlow`` beside each nfzoo coupling architecture (it
#: has no autoregressive flow)
BAYESFLOW_TRANSFORMS = {"realnvp": "affine", "nsf": "spline"}


def mixture_sample(dim: int, n: int = 16 * TRAIN_BATCH, components: int = 8, seed: int = 0):
    """The fixed float32 training sample of the speed benchmarks: a D-dimensional mixture of
    equally likely axis-aligned Gaussians, standardised empirically. Its values do not move a
    step's cost; the README's throughput figures were measured on exactly this sample."""
    rng = np.random.RandomState(seed)
    means = 3.0 * rng.randn(components, dim)
    scales = rng.uniform(0.3, 1.5, size=(components, dim))
    k = rng.randint(components, size=n)
    x = means[k] + scales[k] * rng.randn(n, dim)
    x = (x - x.mean(0)) / x.std(0)
    return x.astype(np.float32)


def supports(system: str, arch: str) -> bool:
    """Whether ``system`` has a flow of ``arch`` (TFP has no stock spline flow, BayesFlow no
    autoregressive one)."""
    if system.startswith("tfp"):
        return arch in TFP_ARCHS
    if system == BAYESFLOW:
        return arch in BAYESFLOW_TRANSFORMS
    return True


def add_bayesflow_option(p) -> None:
    """``--bayesflow-python``, the interpreter of the system ``bayesflow``."""
    p.add_argument(
        "--bayesflow-python",
        default="python",
        help="interpreter with bayesflow, for the system bayesflow (see "
        "tools/benchmarks/bayesflow_worker.py for its environment)",
    )


def nfzoo_flow(arch: str, dim: int, hidden=TRAIN_HIDDEN, seed: int = 0):
    return nfzoo.build(arch, dim, num_layers=TRAIN_LAYERS, hidden_units=hidden, seed=seed)


def nfzoo_kernels(flow) -> list[tuple[int, int]]:
    return [tuple(v.shape) for v in flow.trainable_variables if len(v.shape) == 2]


def tfp_flow(arch: str, dim: int, hidden=TRAIN_HIDDEN, seed: int = 0):
    """TFP's stock bijectors in a TransformedDistribution; returns (dist, trainable vars)."""
    import tensorflow as tf
    import tensorflow_probability as tfp

    tfb, tfd = tfp.bijectors, tfp.distributions
    tf.random.set_seed(seed)
    bijectors, nets = [], []
    for i in range(TRAIN_LAYERS):
        if i:
            bijectors.append(tfb.Permute(list(reversed(range(dim)))))
        if arch == "maf":
            # ReLU as nfzoo's and zuko's MADE (TFP's default is no activation: a linear MADE)
            net = tfb.AutoregressiveNetwork(params=2, hidden_units=hidden, activation="relu")
            bijectors.append(tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=net))
        else:
            net = tfb.real_nvp_default_template(hidden_layers=hidden)
            bijectors.append(tfb.RealNVP(num_masked=dim // 2, shift_and_log_scale_fn=net))
        nets.append(net)
    dist = tfd.TransformedDistribution(
        tfd.MultivariateNormalDiag(loc=tf.zeros(dim)), tfb.Chain(bijectors[::-1])
    )
    dist.log_prob(np.zeros((2, dim), np.float32))  # creates the variables, eagerly
    return dist, [v for net in nets for v in net.trainable_variables]


def zuko_flow(arch: str, dim: int, hidden=TRAIN_HIDDEN, seed: int = 0):
    import torch
    import zuko

    torch.manual_seed(seed)
    name, options = ZUKO_FLOWS[arch]
    cls = getattr(zuko.flows, name)
    return cls(features=dim, transforms=TRAIN_LAYERS, hidden_features=hidden, **options)


def make_trainer(
    system: str,
    arch: str,
    x,
    hidden=TRAIN_HIDDEN,
    seed: int = 0,
    bayesflow_python: str = "python",
    threads: int = 0,
):
    """The trainer (``block(steps) -> seconds``, ``log_prob``, ``kernels``) of ``system``'s
    flow of ``arch`` on the data ``x`` (batch ``TRAIN_BATCH``, Adam at ``TRAIN_LR``); BayesFlow's
    worker runs under ``bayesflow_python`` with ``threads`` (0: TF's default)."""
    dim = x.shape[1]
    if system in ("nfzoo", "nfzoo-graph", PLAIN_MATMUL):
        make = functools.partial(nfzoo_flow, arch, dim, hidden, seed)
        plain = math.inf if system == PLAIN_MATMUL else None
        jit = system != "nfzoo-graph"
        return NfzooTrainer(make, x, TRAIN_LR, TRAIN_BATCH, seed, jit=jit, swap_ratio=plain)
    if system in ("tfp-graph", "tfp-xla"):
        make = functools.partial(tfp_flow, arch, dim, hidden, seed)
        return TfpTrainer(make, x, TRAIN_LR, TRAIN_BATCH, jit=system == "tfp-xla")
    if system == "zuko":
        return ZukoTrainer(zuko_flow(arch, dim, hidden, seed), x, TRAIN_LR, TRAIN_BATCH)
    if system == BAYESFLOW:
        return BayesFlowTrainer(arch, dim, x, hidden, seed, bayesflow_python, threads)
    raise ValueError(f"unknown system {system!r}")


def close(runner) -> None:
    """Ends a runner's worker process, if it has one."""
    if hasattr(runner, "close"):
        runner.close()


# ---- BayesFlow: a worker process speaking JSON lines ------------------------------------


class BayesFlowWorker:
    """The worker process ``benchmarks.bayesflow_worker`` under the interpreter ``python``,
    started with ``options`` (and ``--data``, an .npz of ``arrays``); ``ask`` sends one JSON
    command and returns its reply. A reply with an error, or the worker ending, raises
    RuntimeError (with the last lines the worker wrote to stderr), which ``interleaved`` and
    the subcommands record as the row's error."""

    def __init__(self, python: str, options: list[str], arrays: dict | None = None):
        self.tmp = tempfile.TemporaryDirectory()
        command = [python, "-m", f"{__package__}.bayesflow_worker", *options]
        if arrays:
            data = Path(self.tmp.name) / "stream.npz"
            np.savez(data, **arrays)
            command += ["--data", str(data)]
        # the worker runs as a module of this package, found from the folder above it (the
        # other interpreter has neither nfzoo nor this package installed)
        tools = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (tools, os.environ.get("PYTHONPATH")) if p)
        self.stderr = open(Path(self.tmp.name) / "stderr.txt", "w+")  # noqa: SIM115
        self.files = 0
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            bufsize=1,
            env={**os.environ, "PYTHONPATH": path},
        )

    def ask(self, command: dict) -> dict:
        try:
            self.proc.stdin.write(json.dumps(command) + "\n")
            self.proc.stdin.flush()
            for line in self.proc.stdout:
                if line.startswith("@@"):
                    answer = json.loads(line[2:])
                    if "error" in answer:
                        raise RuntimeError(f"BayesFlow worker: {answer['error']}")
                    return answer
        except BrokenPipeError:
            pass
        raise RuntimeError(
            f"the BayesFlow worker ended (exit code {self.proc.wait()}): {self.stderr_tail()}"
        )

    def stderr_tail(self, lines: int = 3) -> str:
        self.stderr.flush()
        self.stderr.seek(0)
        return " ".join(self.stderr.read().strip().splitlines()[-lines:])[-300:]

    def file(self, array) -> str:
        """``array`` as float32 in a new .npy file of this worker's folder; its path."""
        self.files += 1
        path = Path(self.tmp.name) / f"points-{self.files}.npy"
        np.save(path, np.asarray(array, np.float32))
        return str(path)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=60)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()
        self.tmp.cleanup()


class BayesFlowTrainer(BayesFlowWorker):
    """BayesFlow's flow beside nfzoo's ``arch`` (realnvp: ``CouplingFlow(transform="affine")``,
    nsf: ``transform="spline"``) on D = ``dim`` features, trained on ``x`` (None: untrained)
    by ``bayesflow_worker --mode density``: Keras ``fit`` of a ``BasicEstimator`` with no
    conditions and no standardisation, Adam at ``TRAIN_LR``, batch ``TRAIN_BATCH``, the batches
    of ``x`` in order, each block from the first batch (as ``NfzooTrainer``).

    Matched to nfzoo's flow: couplings on the two halves alternately (each of BayesFlow's
    layers is a dual coupling, first half then second, so ``permutation=None``), no ActNorm
    (nfzoo's realnvp and nsf have none), MLP subnets of ``hidden`` units with ReLU and no
    dropout, a zero-initialised output layer (both libraries: every coupling starts as the
    identity), the spline with 8 bins on [-5, 5]. What differs:
      - depth ceil(5 / 2) = 3 dual couplings: 6 couplings against nfzoo's 5 (BayesFlow has no
        odd count); the FLOP columns count its own kernels;
      - the affine scale is softplus(asinh(s) + log(e - 1)) (positive, 1 at s = 0; BayesFlow's
        soft clamp), nfzoo's exp(5 tanh(s / 5));
      - the spline learns its domain (4 more parameters per feature: left and bottom edges,
        width and height) with bins at least 0.1 wide and high and interior derivatives with
        no floor, and has linear tails of the domain's slope outside it (the identity at
        initialisation); nfzoo's is fixed to [-5, 5], bins at least 1e-3 of it, derivatives
        at least 1e-3, the identity outside;
      - hidden kernels start orthogonal (BayesFlow's default), nfzoo's Glorot-uniform;
      - ``compile`` is BayesFlow's (Keras' ``jit_compile="auto"``: a TF graph on a CPU-only
        machine, XLA with an accelerator; ``info`` records it), one step per call of the
        compiled function; nfzoo's ``compile()`` is XLA with 10 steps per call;
      - ``log_prob`` and ``sample`` are the network's, in one ``tf.function`` with the
        estimator's ``jit_compile``."""

    def __init__(
        self,
        arch: str,
        dim: int,
        x=None,
        hidden=TRAIN_HIDDEN,
        seed: int = 0,
        python: str = "python",
        threads: int = 0,
    ):
        if arch not in BAYESFLOW_TRANSFORMS:
            raise ValueError(f"BayesFlow has no flow of {arch!r}")
        transform = BAYESFLOW_TRANSFORMS[arch]
        options = ["--mode", "density", "--dim", str(dim), "--batch", str(TRAIN_BATCH)]
        options += ["--depth", str(math.ceil(TRAIN_LAYERS / 2)), "--transform", transform]
        options += ["--hidden", *map(str, hidden), "--permutation", "none", "--no-actnorm"]
        options += ["--activation", "relu", "--dropout", "0"]
        if transform == "spline":
            spline = nfzoo.architectures.architecture("nsf").options
            options += ["--bins", str(spline["bins"]), "--bound", str(spline["bound"])]
        options += ["--lr", str(TRAIN_LR), "--seed", str(seed), "--threads", str(threads)]
        super().__init__(python, options, None if x is None else {"x": x})
        self._info = None

    @property
    def info(self) -> dict:
        if self._info is None:
            self._info = self.ask({"cmd": "info"})
        return self._info

    @property
    def kernels(self) -> list[tuple[int, int]]:
        return [tuple(k) for k in self.info["kernels"]]

    def block(self, steps: int) -> float:
        return self.ask({"cmd": "block", "steps": steps})["seconds"]

    def log_prob(self, x) -> np.ndarray:
        path = self.file(x)
        return np.asarray(self.ask({"cmd": "log_prob", "points": path})["log_prob"])

    def memory(self) -> dict:
        return self.ask({"cmd": "memory"})

    def calls(self, task: str, n: int, x=None) -> BayesFlowCalls:
        """The call runner of ``log_prob`` on the points ``x`` or of ``sample`` of ``n``."""
        return BayesFlowCalls(self, task, n, None if x is None else self.file(x))


class BayesFlowCalls:
    """A block is ``calls`` calls of the worker's ``log_prob`` on its points (or ``sample`` of
    ``n`` points), timed by the worker (as ``timing.CallRunner``: each result brought to the
    host); ``close`` ends the worker."""

    def __init__(self, worker: BayesFlowTrainer, task: str, n: int, points: str | None):
        self.worker, self.task, self.n, self.points = worker, task, n, points

    def block(self, calls: int) -> float:
        if self.task == "log_prob":
            command = {"cmd": "time_log_prob", "points": self.points, "calls": calls}
        else:
            command = {"cmd": "time_sample", "n": self.n, "calls": calls}
        return self.worker.ask(command)["seconds"]

    @property
    def info(self) -> dict:
        return self.worker.info

    def close(self) -> None:
        self.worker.close()


def import_peers() -> None:
    """Imports nfzoo (with its exporters) and every peer's framework, so that each process
    measured for memory starts from the same interpreter."""
    import keras  # noqa: F401
    import tensorflow  # noqa: F401
    import tensorflow_probability  # noqa: F401
    import tf_keras  # noqa: F401
    import torch  # noqa: F401
    import zuko  # noqa: F401

    import nfzoo.exporting.formats  # noqa: F401


# ---- Glow -------------------------------------------------------------------------------

GLOW_SHAPE = (8, 8, 1)
GLOW_BATCH = 64
GLOW_OPTIONS = {"num_scales": 2, "layers_per_scale": 8, "hidden_channels": 64, "num_levels": 17}
GLOW_NFZOO = (
    'nfzoo.build("glow", (8, 8, 1), num_scales=2, layers_per_scale=8, hidden_channels=64, '
    "num_levels=17)"
)
GLOW_TFP = (
    "tfb.Chain([nfzoo.layers.Logit(17), tfb.Glow(output_shape=(8, 8, 1), num_glow_blocks=2, "
    "num_steps_per_block=8, coupling_bijector_fn=partial(tfb.GlowDefaultNetwork, "
    "num_hidden=64), exit_bijector_fn=tfb.GlowDefaultExitNetwork)]) on "
    "tfd.Sample(tfd.Normal(0, 1), [64])"
)


def nfzoo_glow(x0, seed: int = 0):
    """nfzoo's Glow (logit pre-processing included), its ActNorms initialised from ``x0``."""
    flow = nfzoo.build("glow", GLOW_SHAPE, seed=seed, **GLOW_OPTIONS)
    flow.initialize(x0)
    return flow


def tfp_glow(x0, seed: int = 0):
    """TFP's stock Glow at nfzoo's configuration, its helpers as TFP ships them (tf_keras
    networks), under nfzoo's ``Logit(17)`` used as a TFP bijector, so that ``log_prob`` is a
    density on [0, 17]^64 as nfzoo's. Its ActNorms initialise from ``x0`` (eagerly, in the
    first ``log_prob``). Returns (dist, trainable variables)."""
    import tensorflow as tf
    import tensorflow_probability as tfp

    tfb, tfd = tfp.bijectors, tfp.distributions
    tf.random.set_seed(seed)
    glow = tfb.Glow(
        output_shape=GLOW_SHAPE,
        num_glow_blocks=GLOW_OPTIONS["num_scales"],
        num_steps_per_block=GLOW_OPTIONS["layers_per_scale"],
        coupling_bijector_fn=functools.partial(
            tfb.GlowDefaultNetwork, num_hidden=GLOW_OPTIONS["hidden_channels"]
        ),
        exit_bijector_fn=tfb.GlowDefaultExitNetwork,
        seed=seed,
    )
    logit = nfzoo.layers.Logit(GLOW_OPTIONS["num_levels"])
    logit.build((None, *GLOW_SHAPE))  # nfzoo's layers must be built before ``inverse``
    size = int(np.prod(GLOW_SHAPE))
    dist = tfd.TransformedDistribution(
        tfd.Sample(tfd.Normal(0.0, 1.0), [size]), tfb.Chain([logit, glow])
    )
    dist.log_prob(x0)  # data-dependent ActNorm initialisation
    return dist, list(dist.trainable_variables)


def make_glow_trainer(system: str, x, seed: int = 0):
    x0 = x[:GLOW_BATCH]  # the first batch of the (unshuffled) pipeline
    if system in ("nfzoo", "nfzoo-graph"):
        make = functools.partial(nfzoo_glow, x0, seed)
        return NfzooTrainer(make, x, TRAIN_LR, GLOW_BATCH, seed, jit=system == "nfzoo")
    if system in ("tfp-graph", "tfp-xla"):
        make = functools.partial(tfp_glow, x0, seed)
        return TfpTrainer(make, x, TRAIN_LR, GLOW_BATCH, jit=system == "tfp-xla")
    raise ValueError(f"unknown system {system!r}")


# ---- NPE: block(steps) -> seconds, draw(x_obs) -> (m, round) -> [m, D] -----------------

NPE_SYSTEMS = ("nfzoo-nsf", "nfzoo-maf", "zuko-nsf", "zuko-maf", "bayesflow")
NPE_LEARNING_RATE = 1e-3
NPE_BINS = 10


class NfzooNpe:
    """``nfzoo.npe.build_npe_flow`` (it standardises theta and x itself), trained by ``fit``
    with the default compile (XLA) on the stream of (theta, x) pairs."""

    def __init__(self, arch, task, theta, x, args):
        import tensorflow as tf

        from nfzoo import npe

        options = {"num_layers": args.layers, "hidden_units": args.hidden}
        if arch == "nsf":
            options["bins"] = NPE_BINS

        def make_flow():
            return npe.build_npe_flow(task, arch, args.seed, **options)

        # fed the pairs below, in place of the pipeline of theta alone
        self.trainer = NfzooTrainer(make_flow, theta, NPE_LEARNING_RATE, args.batch, args.seed)
        pairs = tf.data.Dataset.from_tensor_slices((theta, x))
        self.trainer.ds = (
            pairs.batch(args.batch, drop_remainder=True).repeat().prefetch(tf.data.AUTOTUNE)
        )
        self.params = sum(int(np.prod(v.shape)) for v in self.trainer.flow.trainable_variables)
        self.seed = args.seed

    def block(self, steps: int) -> float:
        return self.trainer.block(steps)

    def draw(self, x_obs):
        flow, seed = self.trainer.flow, self.seed
        x_obs = x_obs.astype(np.float32)
        return lambda m, r: flow.sample(m, seed=seed * 1000 + r, context=x_obs).numpy()


class ZukoNpe:
    """``zuko.flows.NSF(D, X, bins=10, passes=2)`` (a coupling, as nfzoo's nsf) or
    ``zuko.flows.MAF(D, X)``, on theta and x z-scored with the training pairs' means and
    standard deviations (zuko has no standardisation of its own; sbi z-scores the same way),
    a plain torch loop with Adam."""

    def __init__(self, arch, task, theta, x, args):
        import torch
        import zuko

        torch.manual_seed(args.seed)
        self.theta_mean, self.theta_std = theta.mean(0), theta.std(0)
        self.x_mean, self.x_std = x.mean(0), x.std(0)
        kwargs = {"transforms": args.layers, "hidden_features": args.hidden}
        if arch == "nsf":
            self.flow = zuko.flows.NSF(
                task.theta_dim, task.x_dim, bins=NPE_BINS, passes=2, **kwargs
            )
        else:
            self.flow = zuko.flows.MAF(task.theta_dim, task.x_dim, **kwargs)
        self.optimizer = torch.optim.Adam(self.flow.parameters(), lr=NPE_LEARNING_RATE)
        n = len(theta) // args.batch
        t = (theta - self.theta_mean) / self.theta_std
        c = (x - self.x_mean) / self.x_std
        self.thetas = torch.from_numpy(t[: n * args.batch]).reshape(n, args.batch, -1)
        self.xs = torch.from_numpy(c[: n * args.batch]).reshape(n, args.batch, -1)
        self.i = 0
        self.params = sum(p.numel() for p in self.flow.parameters())
        self.seed = args.seed

    def block(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            k = self.i % len(self.thetas)
            self.i += 1
            loss = -self.flow(self.xs[k]).log_prob(self.thetas[k]).mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        loss.item()
        return time.perf_counter() - start

    def draw(self, x_obs):
        import torch

        c = torch.from_numpy(((x_obs - self.x_mean) / self.x_std).astype(np.float32))

        def draw(m, r):
            torch.manual_seed(self.seed * 1000 + r)
            with torch.no_grad():
                t = self.flow(c).sample((m,)).numpy().astype(np.float64)
            return self.theta_mean + self.theta_std * t

        return draw


class BayesFlowNpe(BayesFlowWorker):
    """The worker process ``benchmarks.bayesflow_worker --mode npe``, run by
    ``--bayesflow-python``; one JSON line per command."""

    def __init__(self, task, theta, x, args, threads: int):
        options = ["--mode", "npe", "--batch", str(args.batch)]
        options += ["--depth", str(math.ceil(args.layers / 2))]
        options += ["--hidden", *map(str, args.hidden), "--transform", args.bayesflow_transform]
        options += ["--lr", str(NPE_LEARNING_RATE), "--seed", str(args.seed)]
        options += ["--threads", str(threads)]
        super().__init__(args.bayesflow_python, options, {"theta": theta, "x": x})
        self.seed = args.seed

    @property
    def params(self) -> int:
        return self.info["params"]

    @property
    def info(self) -> dict:
        # asked when needed: BayesFlow builds its networks on the first batch it is fitted on
        return self.ask({"cmd": "info"})

    def block(self, steps: int) -> float:
        return self.ask({"cmd": "block", "steps": steps})["seconds"]

    def draw(self, x_obs):
        def draw(m, r):
            command = {"cmd": "sample", "x": x_obs.tolist(), "n": m, "seed": self.seed * 1000 + r}
            return np.asarray(self.ask(command)["samples"], dtype=np.float64)

        return draw


def make_npe(system: str, task, theta, x, args, threads: int):
    if system.startswith("nfzoo-"):
        return NfzooNpe(system.split("-")[1], task, theta, x, args)
    if system.startswith("zuko-"):
        return ZukoNpe(system.split("-")[1], task, theta, x, args)
    return BayesFlowNpe(task, theta, x, args, threads)
