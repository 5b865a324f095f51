"""The GPU fast path: a graph-replayed step (guards, warm-up, static buffers), an update
without host syncs, the schedule on the device, compiled losses equal to eager ones, and
the options that turn them on. Capture itself needs CUDA: those tests skip with the reason."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from tests.conftest import TINY_TASK
from tql.agent import AgentConfig, TQLAgent, compile_pays, lr_factor
from tql.errors import ConfigError
from tql.graphs import GraphedStep, Uploader, use_cuda_graph
from tql.trainer import TrainConfig, Trainer, train

OBS, ACT = 6, 2
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: graph capture records CUDA kernels")


def _config(**overrides) -> AgentConfig:
    return AgentConfig(size="0.03M", actor_hidden=(16,), batch_size=8, flow_steps=2).replace(**overrides)


def _batches(count: int, n: int = 8, device: str = "cpu") -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    batches = [{"observations": torch.randn(n, OBS, generator=g), "actions": torch.rand(n, ACT, generator=g) * 2 - 1,
                "next_observations": torch.randn(n, OBS, generator=g), "rewards": -torch.rand(n, generator=g),
                "masks": torch.ones(n)} for _ in range(count)]
    return [{k: v.to(device) for k, v in b.items()} for b in batches]


class FakeCapture:
    """The ``CudaCapture`` contract on a CPU: warm-up runs the step; capture records it
    without changing any state (a CUDA capture executes nothing); replay runs the recorded
    step and writes its results into the outputs returned at capture."""

    def __init__(self, state: list[torch.Tensor]):
        self.state, self.captures, self.replays = state, 0, 0

    def warm_up(self, run):
        return run()

    def capture(self, run):
        self.captures += 1
        before = [t.clone() for t in self.state]
        outputs = run()
        for t, b in zip(self.state, before):
            t.copy_(b)

        def replay():
            self.replays += 1
            for key, value in run().items():
                outputs[key].copy_(value)

        return replay, outputs


def _toy_step(weight: torch.Tensor):
    def step(target: torch.Tensor) -> dict[str, torch.Tensor]:
        weight.add_(target.sum())
        return {"weight": weight.clone(), "target": target.clone()}
    return step


def test_cuda_graph_modes_resolve_by_device_and_refuse_bad_values():
    cpu = torch.device("cpu")
    assert not use_cuda_graph("auto", cpu) and not use_cuda_graph("off", cpu)
    with pytest.raises(ConfigError, match="'sometimes' is not one of: auto, on, off"):
        use_cuda_graph("sometimes", cpu)
    with pytest.raises(ConfigError, match="needs a CUDA device, this run is on cpu; use auto or off"):
        use_cuda_graph("on", cpu)


def test_warm_up_then_one_capture_then_replays_with_static_outputs():
    weight = torch.zeros(())
    backend = FakeCapture([weight])
    step = GraphedStep(_toy_step(weight), backend, warmup=2)
    expected, outputs = 0.0, []
    for k in range(6):
        target = torch.full((2, 2), float(k))
        out = step(target)
        expected += 4.0 * k
        assert float(weight) == expected  # every call, warm-up and replay, is one real update
        assert float(out["weight"]) == expected and torch.equal(out["target"], target)
        outputs.append(out)
    assert (backend.captures, backend.replays, step.captured) == (1, 4, True)
    assert all(o is outputs[2] for o in outputs[3:])  # replays write the same static buffers


def test_a_changed_input_shape_falls_back_to_eager_with_one_warning():
    weight = torch.zeros(())
    said: list[str] = []
    step = GraphedStep(_toy_step(weight), FakeCapture([weight]), warmup=1, warn=said.append)
    for _ in range(3):
        step(torch.ones(2, 2))
    out = step(torch.ones(3, 2))  # e.g. another depth's H̄ table
    step(torch.ones(3, 2))
    assert float(weight) == 3 * 4 + 2 * 6 and float(out["weight"]) == 3 * 4 + 6
    assert step.eager_only and not step.captured
    assert len(said) == 1 and "H̄ changed from (2, 2)" in said[0] and "continuing eagerly" in said[0]


def test_a_failing_capture_falls_back_to_eager_without_losing_the_update():
    weight = torch.zeros(())

    class Broken(FakeCapture):
        def capture(self, run):
            raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    said: list[str] = []
    step = GraphedStep(_toy_step(weight), Broken([weight]), warmup=1, warn=said.append)
    for _ in range(3):
        step(torch.ones(()))
    assert float(weight) == 3.0 and step.eager_only
    assert said == ["CUDA graph off from update 2: capture failed (RuntimeError: operation not permitted when "
                    "stream is capturing); continuing eagerly"]


class _CaptureModel:
    """torch's capture bookkeeping, as far as generators go: a capture marks every registered
    generator and the device's default one as capturing, and only a capture that ends well
    clears the mark (a marked generator refuses eager draws)."""

    class Generator:
        def __init__(self, offset: int = 0):
            self.device, self.offset, self.capturing = torch.device("cuda"), offset, False

        def clone_state(self):
            return _CaptureModel.Generator(self.offset)

        def graphsafe_set_state(self, other):
            self.offset, self.capturing = other.offset, other.capturing

        def draw(self):
            if self.capturing:
                raise RuntimeError("Offset increment outside graph capture encountered unexpectedly.")
            self.offset += 4

    def __init__(self, monkeypatch):
        self.default, self.registered = self.Generator(offset=100), []
        model = self

        class Graph:
            def register_generator_state(self, generator):
                model.registered.append(generator)

            def replay(self):
                pass

        class graph:  # noqa: N801 - torch.cuda.graph's name
            def __init__(self, g):
                pass

            def __enter__(self):
                for generator in [*model.registered, model.default]:
                    generator.capturing = True

            def __exit__(self, kind, exc, tb):
                if kind is None:
                    for generator in [*model.registered, model.default]:
                        generator.capturing = False
                return False

        monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
        monkeypatch.setattr(torch.cuda, "graph", graph)
        monkeypatch.setattr(torch.cuda, "default_generators", (self.default,))
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


def test_a_failed_cuda_capture_gives_the_generators_back_as_they_were(monkeypatch):
    from tql.graphs import CudaCapture

    model = _CaptureModel(monkeypatch)
    ours = model.Generator(offset=8)
    capture = CudaCapture(torch.device("cuda"), [ours])

    def failing():
        ours.offset += 4  # what the capture recorded: never run
        raise RuntimeError("operation not permitted when stream is capturing")

    with pytest.raises(RuntimeError, match="not permitted"):
        capture.capture(failing)
    assert (ours.capturing, model.default.capturing) == (False, False) and capture.graph is None
    assert (ours.offset, model.default.offset) == (8, 100)  # the eager update draws what it would have
    ours.draw(), model.default.draw()  # no "Offset increment outside graph capture"
    replay, out = capture.capture(lambda: "recorded")
    assert out == "recorded" and not ours.capturing and model.registered.count(ours) == 2


def test_uploads_arrive_as_float32_tables_on_the_device():
    upload = Uploader(torch.device("cpu"))
    table = [[3.0, 2.5], [2.0, 1.5]]
    out = upload(table, (-1, 2))
    assert out.dtype == torch.float32 and out.tolist() == table
    assert upload([table, table], (2, -1, 2)).shape == (2, 2, 2)


@CUDA
def test_pinned_uploads_are_never_overwritten_before_they_arrive():
    upload = Uploader(torch.device("cuda"), slots=2)
    outs = [upload([[float(i), -float(i)]], (-1, 2)) for i in range(50)]  # the host runs ahead
    torch.cuda.synchronize()
    assert [o.tolist() for o in outs] == [[[float(i), -float(i)]] for i in range(50)]


def test_warmup_must_be_positive():
    with pytest.raises(ValueError, match="warmup=0 must be >= 1"):
        GraphedStep(_toy_step(torch.zeros(())), FakeCapture([]), warmup=0)


def test_the_update_reads_nothing_back_to_the_host(monkeypatch):
    """A captured update cannot read device values on the host: after the first update
    (optimiser state is created lazily), no .item(), float(), bool() or .tolist()."""
    agent = TQLAgent(OBS, ACT, _config(), total_steps=100)
    batch = _batches(1)[0]
    target = torch.full((2, 2), 1.5)
    agent.update(batch, target)

    def refuse(*args, **kwargs):
        raise AssertionError("host sync in the update")

    for name in ("item", "tolist", "__float__", "__bool__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    agent.update(batch, target)
    monkeypatch.undo()
    assert agent.lr_step == 2


def test_the_schedule_runs_on_the_device_in_place():
    """Fused AdamW reads each group's rate from a tensor the update rewrites in place (the
    object a CUDA graph recorded), equal to the published schedule at every step."""
    agent = TQLAgent(OBS, ACT, _config(), total_steps=40)
    rates = [group["lr"] for group in agent.optimizer.param_groups]
    assert all(isinstance(r, torch.Tensor) for r in rates)
    for step, batch in enumerate(_batches(6)):
        factor = float(lr_factor(step, 40, 0.01))
        assert float(rates[0]) == pytest.approx(1e-4 * factor, rel=1e-6)
        assert float(rates[2]) == pytest.approx(5e-4 * factor, rel=1e-6)
        agent.update(batch, 1.0)
    assert [g["lr"] for g in agent.optimizer.param_groups] == rates  # the same objects


def test_a_loaded_state_with_float_rates_gets_tensor_rates_back():
    agent = TQLAgent(OBS, ACT, _config(), total_steps=40)
    agent.update(_batches(1)[0], 1.0)
    state = agent.full_state()
    for group in state["optimizer"]["param_groups"]:  # as saved before rates were tensors
        group["lr"] = float(group["lr"])
    resumed = TQLAgent(OBS, ACT, _config(), total_steps=40)
    resumed.load_full_state(state)
    assert all(isinstance(g["lr"], torch.Tensor) for g in resumed.optimizer.param_groups)
    assert float(resumed.optimizer.param_groups[0]["lr"]) == pytest.approx(1e-4 * float(lr_factor(1, 40, 0.01)))


def test_compiled_losses_and_gradients_equal_eager_ones():
    """torch.compile of the whole loss: from the same initialisation, batches and noise, the
    same gradients of one update (float32 reassociation only; a gradient that is rounding
    noise, like the key biases', passes by the absolute tolerance) and the same losses
    over several updates."""
    def make(compile_):
        torch.manual_seed(0)
        return TQLAgent(OBS, ACT, _config(compile=compile_), total_steps=20)

    eager, compiled = make(False), make(True)
    assert compiled.compiled and not eager.compiled
    batches = _batches(4)
    noises = [eager.sample_noise(b, torch.Generator().manual_seed(i)) for i, b in enumerate(batches)]
    target = torch.full((2, 2), 1.5)
    for losses in (eager.losses, compiled._losses):
        losses(batches[0], target, noises[0])[0].backward()
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-6, msg=name)
    for batch, noise in zip(batches, noises):
        want, got = eager.update(batch, target, noise), compiled.update(batch, target, noise)
        for key in ("critic/td_loss", "critic/loss", "actor/bc_flow_loss", "actor/distill_loss", "actor/q_loss"):
            torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-6, msg=key)
        torch.testing.assert_close(got["entropies"], want["entropies"], rtol=1e-4, atol=1e-6)


def test_compile_by_default_only_where_it_pays_and_a_failed_default_compile_runs_eagerly(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [compile_pays(cpu, 1_999), compile_pays(cpu, 2_000)] == [False, True]
    assert [compile_pays(cuda, 49_999), compile_pays(cuda, 50_000), compile_pays(torch.device("meta"), 10**9)] == \
        [False, True, False]
    assert not TQLAgent(OBS, ACT, _config()).compiled  # a library agent stays eager unless asked

    def broken_compile(fn, **kwargs):
        def fail(*args, **kw):
            raise RuntimeError("inductor: no C++ compiler")
        return fail

    monkeypatch.setattr(torch, "compile", broken_compile)
    agent = TQLAgent(OBS, ACT, _config(), compile_default=True)  # as the trainer builds a long run's agent
    assert agent.compiled
    with pytest.warns(RuntimeWarning, match="torch.compile of the loss failed .RuntimeError: inductor: no C"):
        metrics = agent.update(_batches(1)[0], 1.0)
    assert torch.isfinite(metrics["critic/loss"]) and not agent.compiled and agent.lr_step == 1
    agent.update(_batches(1)[0], 1.0)  # eager from now on, without another warning
    explicit = TQLAgent(OBS, ACT, _config(compile=True))
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler"):  # compile=True: the error is the user's
        explicit.update(_batches(1)[0], 1.0)


def test_train_config_checks_the_graph_mode_and_refuses_on_without_cuda(tiny_data_dir, tmp_path):
    with pytest.raises(ConfigError, match="cuda_graph 'always' is not one of: auto, on, off"):
        TrainConfig.from_profile(TINY_TASK, "smoke", cuda_graph="always")
    config = TrainConfig.from_profile(TINY_TASK, "smoke", steps=4, device="cpu", cuda_graph="on",
                                      data_dir=str(tiny_data_dir))
    with pytest.raises(ConfigError, match="--cuda-graph on needs a CUDA device"):
        Trainer(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # refused before any file was written


def test_speed_options_do_not_block_a_resume(tiny_data_dir, tmp_path):
    """A run saved before the speed options existed (or with other values) resumes."""
    values = dict(steps=10, eval_every=10, eval_episodes=1, eval_max_steps=8, log_every=5, checkpoint_every=5,
                  data_dir=str(tiny_data_dir))
    train(TrainConfig.from_profile(TINY_TASK, "smoke", {"compile": False}, **values), tmp_path, progress=False)
    saved = json.loads((tmp_path / "config.json").read_text())
    for key in ("cuda_graph", "tf32"):
        del saved["train"][key]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    longer = TrainConfig.from_profile(TINY_TASK, "smoke", {"compile": None}, **{**values, "steps": 15},
                                      cuda_graph="off", tf32=False)
    assert train(longer, tmp_path, progress=False).steps == 15


@CUDA
def test_graph_replays_equal_eager_updates_on_cuda():
    """The same agent state, batches and noise: 20 graph-replayed updates = 20 eager ones."""
    from tql.graphs import CudaCapture

    def make():
        torch.manual_seed(0)
        return TQLAgent(OBS, ACT, _config(compile=False), "cuda", total_steps=40)

    eager, graphed = make(), make()
    batches = _batches(20, device="cuda")
    noises = [eager.sample_noise(b, torch.Generator("cuda").manual_seed(i)) for i, b in enumerate(batches)]
    static = {"batch": {k: v.clone() for k, v in batches[0].items()}, "noise": {k: v.clone() for k, v in noises[0].items()}}
    step = GraphedStep(lambda target: graphed.update(static["batch"], target, static["noise"]), CudaCapture(
        torch.device("cuda")), warmup=3)
    target = torch.full((2, 2), 1.5, device="cuda")
    for batch, noise in zip(batches, noises):
        for key in batch:
            static["batch"][key].copy_(batch[key])
        for key in noise:
            static["noise"][key].copy_(noise[key])
        got, want = step(target), eager.update(batch, target, noise)
        for key in ("critic/td_loss", "critic/loss", "actor/q_loss"):
            torch.testing.assert_close(got[key], want[key], rtol=1e-3, atol=1e-6, msg=key)
    assert step.captured and graphed.lr_step == eager.lr_step == 20


@CUDA
def test_a_failed_capture_on_cuda_leaves_random_draws_working():
    """A host sync inside the captured step fails the capture; the update then runs eagerly
    and every generator draws again (before the fix: "Offset increment outside graph capture")."""
    from tql.graphs import CudaCapture

    ours = torch.Generator("cuda").manual_seed(0)
    weight = torch.zeros((), device="cuda")

    def step(target):
        noise = torch.rand((), device="cuda", generator=ours) + torch.rand((), device="cuda")
        weight.add_(noise * target)
        return {"weight": weight, "synced": float(weight)}  # float(): not allowed while capturing

    said: list[str] = []
    graphed = GraphedStep(step, CudaCapture(torch.device("cuda"), [ours]), warmup=1, warn=said.append)
    for _ in range(3):
        graphed(torch.ones((), device="cuda"))
    assert graphed.eager_only and len(said) == 1 and "capture failed" in said[0]
    torch.rand((), device="cuda", generator=ours), torch.rand((), device="cuda")


@CUDA
def test_training_on_cuda_captures_the_step(tiny_data_dir, tmp_path):
    config = TrainConfig.from_profile(TINY_TASK, "smoke", steps=12, eval_every=12, eval_episodes=1, eval_max_steps=8,
                                      log_every=4, data_dir=str(tiny_data_dir), device="cuda", cuda_graph="on")
    trainer = Trainer(config, tmp_path, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback
        result = trainer.run()
    assert result.steps == 12 and trainer.update.captured and trainer.agent.lr_step == 12


@CUDA
def test_population_training_on_cuda_captures_the_natively_batched_step(tiny_data_dir, tmp_path):
    from tql.batched.pbt import PopulationTrainer

    config = TrainConfig.from_profile(TINY_TASK, "smoke", steps=12, eval_every=6, eval_episodes=1, eval_max_steps=8,
                                      log_every=4, data_dir=str(tiny_data_dir), device="cuda", cuda_graph="on")
    trainer = PopulationTrainer(config, tmp_path, members=3, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = trainer.run()
    assert result.steps == 12 and trainer.update.captured
    assert trainer.agent.steps.tolist() == [12.0, 12.0, 12.0]
