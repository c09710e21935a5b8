"""`make demo`: a narrow CIFAR-style ResNet on Fashion-MNIST, on 2 CPU cores.

Not a run of the paper: 800 steps of 128 images (an epoch is 468 steps, so
about 1.7 passes over the 60,000 training images), evaluated on the full
10,000-image test split after the first epoch and at the end. Everything
else follows the CIFAR recipe (docs/method.md section 6): SGD 0.1, momentum
0.9, weight decay 1e-4, /10 at 50% and 75%, Zipf's LS with lambda 0.1 on
dense votes upsampled x2. The argument after ':' picks the method, with
its CIFAR-100 settings (`paper.method_settings`):
`--config=experiments/configs/fashion_mnist_demo.py:cs_kd`; the default is
Zipf's LS. `experiments.demo` runs CE, LS and Zipf's LS (`--methods` picks
others). How long it takes, and where the time goes:
benchmarks/RESULTS.md ("make demo").
"""
from typing import Optional

from experiments.configs import paper


def get_config(method: Optional[str] = None):
  method = method or "zipf"
  if method in paper.ABLATIONS and paper.ABLATIONS[method].get("loss.method") == method:
    config = paper.recipe("cifar100", "cifar_resnet_tiny", "zipf", method)  # 'ls_zipf'
  else:
    config = paper.recipe("cifar100", "cifar_resnet_tiny", method)
  config.dataset = "fashion_mnist"
  config.num_train_steps = 800
  # Two evaluations (after epoch 1 and at step 800), not four: a pass over
  # the 10,000 test images is ~78 forward passes of 128 images, roughly the
  # work of 26 train steps (a step being about three forward passes).
  config.eval_every_epochs = 1.0
  config.eval_batch_size = 400
  config.log_every_steps = 100
  config.checkpoint_every_steps = 500
  return config
