"""`make demo`: a narrow CIFAR-style ResNet on Fashion-MNIST, about a minute on 2 cores.

Not a run of the paper: 800 steps of 128 images (about 1.7 passes over the
60,000 training images), evaluated on the full 10,000-image test split every
200 steps ("epoch" here means 200 steps). Everything else follows the CIFAR
recipe (docs/method.md section 6): SGD 0.1, momentum 0.9, weight decay 1e-4, /10 at 50% and
75%, Zipf's LS with lambda 0.1 on dense votes upsampled x2. Pass
`--config.loss.method=ce|ls|zipf`; `experiments.demo` runs all three.
"""
from experiments.configs import paper


def get_config():
  config = paper.recipe("cifar100", "cifar_resnet_tiny", "zipf")
  config.dataset = "fashion_mnist"
  config.num_train_steps = 800
  config.steps_per_epoch = 200
  config.eval_batch_size = 400
  config.log_every_steps = 100
  config.checkpoint_every_steps = 500
  return config
