"""Feature distillation from the FP model: the term, its gradients, and that it leaves no trace on the models."""

import copy
from types import SimpleNamespace

import pytest
import torch

from yoloq.methods.distill import FeatureDistillation, detection_head, relative_feature_error
from yoloq.models.build import build_model, hyperparameters
from yoloq.quant import QuantConfig, quantize_model


def test_relative_feature_error_sums_each_level_relative_to_the_teacher():
    t = [torch.ones(2, 3, 4, 4), 2 * torch.ones(2, 5, 2, 2)]
    assert relative_feature_error([x.clone() for x in t], t) == 0
    s = [t[0] * 1.5, t[1] * 0.5]  # relative errors 0.25 and 0.25
    assert relative_feature_error(s, t).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="2 inputs, the teacher's 1"):
        relative_feature_error(s, t[:1])


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    teacher = build_model("yolov5n.yaml", {0: "a", 1: "b"}, hyperparameters(imgsz=64), "detect").eval()
    images = torch.rand(2, 3, 64, 64)
    student = quantize_model(copy.deepcopy(teacher), QuantConfig(w_bits=4, a_bits=4), [images])
    return teacher, student, images


def head_inputs(model, images):
    seen = {}
    handle = detection_head(model).register_forward_pre_hook(lambda m, args: seen.update(x=list(args[0])))
    with torch.no_grad():
        model(images)
    handle.remove()
    return seen["x"]


def test_the_term_pulls_the_student_towards_the_teacher_and_leaves_no_hooks(models):
    teacher, student, images = models
    student = copy.deepcopy(student).train()
    trainable = [p.requires_grad for p in teacher.parameters()]
    distill = FeatureDistillation(teacher, weight=2.0)
    # what the term must be: the head's inputs of both models in training mode (BatchNorm on the batch's statistics)
    expected = 2.0 * images.shape[0] * relative_feature_error(head_inputs(student, images),
                                                              head_inputs(copy.deepcopy(teacher).train(), images))
    trainer = SimpleNamespace(model=student, batch=0, history=[{"epoch": 1}])
    distill.on_stage_start(trainer)
    distill.on_epoch_start(trainer)
    student(images)  # the training forward the task loss makes
    loss = distill.extra_loss(trainer)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5) and loss.item() > 0

    loss.backward()
    assert all(p.grad is None for p in distill.teacher.parameters())  # a frozen teacher
    assert all(p.grad is None for p in teacher.parameters())  # the FP model itself is untouched
    assert [p.requires_grad for p in teacher.parameters()] == trainable
    assert student.model[0].conv.weight.grad.abs().sum() > 0  # down to the stem, through the fake quantizers
    assert distill.extra_loss(trainer) is None  # nothing captured since: no stale features reused

    distill.on_epoch_end(trainer, {})
    assert trainer.history[-1]["distill_error"] == pytest.approx(expected.item() / 4.0, rel=1e-5)
    distill.on_stage_end(trainer)
    hooks = [m for model in (student, distill.teacher) for m in model.modules() if m._forward_pre_hooks]
    assert not hooks  # an EMA copy, an export or the next stage sees the bare model


def test_evaluation_forwards_do_not_feed_the_term(models):
    teacher, student, images = models
    student = copy.deepcopy(student)
    distill = FeatureDistillation(teacher, weight=1.0)
    trainer = SimpleNamespace(model=student, batch=0, history=[])
    distill.on_stage_start(trainer)
    with torch.no_grad():
        student.eval()(images)
    assert distill.extra_loss(trainer) is None
    distill.on_stage_end(trainer)


def test_an_unquantized_student_has_nothing_to_learn(models):
    """The target is reachable: the FP model in training mode matches its teacher, and the teacher's BatchNorm
    running statistics (what it would deploy with) stay untouched by the batches it sees."""
    teacher, _, images = models
    distill = FeatureDistillation(teacher, weight=1.0)
    running = {k: v.clone() for k, v in distill.teacher.state_dict().items() if "running" in k}
    student = copy.deepcopy(teacher).train()
    trainer = SimpleNamespace(model=student, batch=0, history=[])
    distill.on_stage_start(trainer)
    student(images * 0.5 + 0.2)  # other statistics than the FP model's running ones
    assert distill.extra_loss(trainer).item() == pytest.approx(0, abs=1e-6)
    state = distill.teacher.state_dict()
    assert all(torch.equal(state[k], v) for k, v in running.items())
    distill.on_stage_end(trainer)
