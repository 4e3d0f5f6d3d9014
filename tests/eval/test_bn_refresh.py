import pytest
import torch
from torch import nn

from yoloq.eval.bn_refresh import refresh_bn_statistics


class TwoBatchLoader:
    """An EpochLoader's interface: each epoch yields two uint8 image batches drawn from that epoch's seed."""

    def __init__(self, batches_per_epoch: int = 2):
        self.n, self.epoch, self.seen = batches_per_epoch, 0, []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(self.epoch)
        for _ in range(self.n):
            img = torch.randint(0, 256, (4, 3, 8, 8), generator=g, dtype=torch.uint8)
            self.seen.append(img)
            yield {"img": img}


def test_running_statistics_become_the_average_over_the_batches_and_nothing_else_changes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5, momentum=0.03)).eval()
    weight = model[0].weight.clone()
    loader = TwoBatchLoader()
    assert refresh_bn_statistics(model, loader, 5, torch.device("cpu")) == 5  # two and a half epochs
    assert len(loader.seen) == 5 and loader.epoch == 2
    with torch.no_grad():
        outs = [model[0](img.float() / 255) for img in loader.seen]
    means = torch.stack([o.mean((0, 2, 3)) for o in outs])
    variances = torch.stack([o.var((0, 2, 3), unbiased=True) for o in outs])
    torch.testing.assert_close(model[1].running_mean, means.mean(0))
    torch.testing.assert_close(model[1].running_var, variances.mean(0))
    assert torch.equal(model[0].weight, weight)
    assert model[1].momentum == 0.03 and not model.training  # settings and mode as they were


def test_no_batches_is_an_error_not_a_hang():
    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5))
    with pytest.raises(ValueError, match="no batch"):
        refresh_bn_statistics(model, TwoBatchLoader(0), 3, torch.device("cpu"))
    assert model[1].momentum == 0.1


def test_zero_batches_keep_the_saved_statistics():
    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5))
    model[1].running_mean.fill_(2.0)
    assert refresh_bn_statistics(model, TwoBatchLoader(), 0, torch.device("cpu")) == 0
    assert torch.all(model[1].running_mean == 2.0)


def test_the_qat_stage_scores_the_re_estimated_model_and_keeps_the_saved_score():
    from types import SimpleNamespace

    from yoloq.engine.stages.qat import refresh_bn_after_training

    model = nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5)).eval()
    model[1].running_mean.fill_(7.0)  # stale: far from anything the loader's images give
    scored = []
    trainer = SimpleNamespace(eval_model=model,
                              evaluate=lambda m: scored.append(m[1].running_mean.clone()) or {"mAP50-95": 0.5})
    metrics, record = refresh_bn_after_training(trainer, TwoBatchLoader(), 3, {"mAP50-95": 0.25})
    assert metrics == {"mAP50-95": 0.5} and record == {"bn_refresh": 3, "mAP50-95_saved_bn": 0.25}
    assert len(scored) == 1 and torch.equal(scored[0], model[1].running_mean)  # scored after the re-estimate
    assert model[1].running_mean.abs().max() < 1 and not model.training
