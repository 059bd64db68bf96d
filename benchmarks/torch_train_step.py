"""The same model in PyTorch, timed like benchmarks/train_step.py: the comparison for the
training speed of the TensorFlow graph on the same CPU.

    pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu   # not in requirements
    python benchmarks/torch_train_step.py [--flagfile=configs/celeba128.flags] [main.py flags]
        [--steps=20 --warmup=5 --channels_last]

Same layers, sizes, initial scales, losses and optimizer as network.py for the
flags (encoder, residual or plain decoder, U-Net or resnet refiners, batch norm in
training mode, nearest-neighbour resize + conv upsampling, KL + Gaussian + L1/L2
losses, Adam); one constant batch; median step time over --steps after --warmup.
Prints a table row and one JSON line.
"""
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

import main  # noqa: E402  (defines the model flags)
from network import MIN_STD, RESNET_BLOCKS, RESNET_WIDEN, RESNET_WIDTH  # noqa: E402
from ops import BN_DECAY, BN_EPSILON, LEAK  # noqa: E402
from utils.run import stages  # noqa: E402
from utils.run.shapes import level_sizes  # noqa: E402

flags.DEFINE_integer('steps', 20, 'timed training steps')
flags.DEFINE_integer('warmup', 5, 'untimed training steps first')
flags.DEFINE_boolean('channels_last', False, 'NHWC memory layout (PyTorch\'s default is NCHW)')
flags.DEFINE_string('label', '', 'name of this configuration in the output')

BN_MOMENTUM = 1 - BN_DECAY  # PyTorch's momentum is the weight of the batch's value


def build(torch, conf):
    """The model of the flags as a torch.nn.Module whose forward returns the loss."""
    nn, functional = torch.nn, torch.nn.functional

    def conv_bn_lrelu(cin, cout, stride=1, kernel=3):
        return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                             nn.BatchNorm2d(cout, BN_EPSILON, BN_MOMENTUM),
                             nn.LeakyReLU(LEAK))

    class Residual(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.layer1 = conv_bn_lrelu(channels, channels)
            self.layer2 = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
                                        nn.BatchNorm2d(channels, BN_EPSILON, BN_MOMENTUM))

        def forward(self, x):
            return functional.leaky_relu(x + self.layer2(self.layer1(x)), LEAK)

    class Up(nn.Module):  # nearest resize to an exact size, then conv + BN + leaky ReLU
        def __init__(self, cin, cout, size):
            super().__init__()
            self.size = size
            self.conv = conv_bn_lrelu(cin, cout)

        def forward(self, x):
            return self.conv(functional.interpolate(x, size=self.size, mode='nearest'))

    class Encoder(nn.Module):
        def __init__(self, size):
            super().__init__()
            sizes = level_sizes(size[0], size[1], conf.network_depth)
            layers, cin = [], conf.channel
            for level in range(conf.network_depth):
                cout = conf.start_channel_num * 2 ** level
                layers.append(conv_bn_lrelu(cin, cout, stride=2))
                cin = cout
            self.body = nn.Sequential(*layers)
            self.latent = nn.Linear(sizes[-1][0] * sizes[-1][1] * cin, 2 * conf.latent_len)

        def forward(self, x):
            mean, raw = self.latent(self.body(x).flatten(1)).chunk(2, dim=1)
            return mean, functional.softplus(raw) + MIN_STD

    class Decoder(nn.Module):
        def __init__(self, size):
            super().__init__()
            sizes = level_sizes(size[0], size[1], conf.network_depth)
            depth = conf.network_depth
            channels = conf.start_channel_num * 2 ** (depth - 1)
            self.bottom = (channels,) + sizes[depth]
            self.project = nn.Linear(conf.latent_len, channels * sizes[depth][0] *
                                     sizes[depth][1])
            self.project_bn = nn.BatchNorm2d(channels, BN_EPSILON, BN_MOMENTUM)
            layers = []
            for level in reversed(range(depth)):
                if conf.decoder == 'residual':
                    layers.append(Residual(channels))
                out = conf.start_channel_num * 2 ** max(level - 1, 0)
                layers.append(Up(channels, out, sizes[level]))
                channels = out
            self.body = nn.Sequential(*layers)
            self.to_image = nn.Conv2d(channels, conf.channel, 3, 1, 1)

        def forward(self, z):
            x = self.project(z).view(-1, *self.bottom)
            x = functional.leaky_relu(self.project_bn(x), LEAK)
            return torch.tanh(self.to_image(self.body(x)))

    class UNet(nn.Module):
        def __init__(self, size):
            super().__init__()
            sizes = level_sizes(size[0], size[1], conf.network_depth)
            start = conf.model.refine_channels()
            self.inp = conv_bn_lrelu(conf.channel, start)
            self.down = nn.ModuleList(conv_bn_lrelu(start * 2 ** level, start * 2 ** (level + 1),
                                                    stride=2)
                                      for level in range(conf.network_depth))
            self.up = nn.ModuleList(Up(start * 2 ** (level + 1), start * 2 ** level,
                                       sizes[level]) for level in range(conf.network_depth))
            self.merge = nn.ModuleList(conv_bn_lrelu(start * 2 ** (level + 1), start * 2 ** level)
                                       for level in range(conf.network_depth))
            self.to_image = nn.Conv2d(start, conf.channel, 3, 1, 1)

        def forward(self, image):
            x = self.inp(image)
            skips = [x]
            for layer in self.down:
                x = layer(x)
                skips.append(x)
            for level in reversed(range(conf.network_depth)):
                x = self.merge[level](torch.cat([self.up[level](x), skips[level]], dim=1))
            return torch.tanh(self.to_image(x))

    class ResNet(nn.Module):
        def __init__(self, _size):
            super().__init__()
            width = RESNET_WIDTH * conf.model.refine_channels()
            self.inp = conv_bn_lrelu(conf.channel, width, kernel=5)
            self.blocks = nn.Sequential(*[Residual(width) for _ in range(RESNET_BLOCKS)])
            self.merge = nn.Sequential(nn.Conv2d(width, width, 3, 1, 1, bias=False),
                                       nn.BatchNorm2d(width, BN_EPSILON, BN_MOMENTUM))
            self.tail = nn.Sequential(conv_bn_lrelu(width, RESNET_WIDEN * width),
                                      conv_bn_lrelu(RESNET_WIDEN * width, width),
                                      nn.Conv2d(width, conf.channel, 3, 1, 1))

        def forward(self, image):
            first = self.inp(image)
            return torch.tanh(self.tail(self.merge(self.blocks(first)) + first))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.sizes = stages.stage_sizes(conf.height, conf.width, conf.num_stages,
                                            conf.coarse_scale)
            self.encoder = Encoder(self.sizes[0])
            self.decoder = Decoder(self.sizes[0])
            refiner = ResNet if conf.refine_net == 'resnet' else UNet
            self.refiners = nn.ModuleList(refiner(size) for size in self.sizes[1:])
            self.weights = stages.refine_weights(conf.refine_weights, conf.num_stages)

        def forward(self, x):
            targets = [x if tuple(size) == tuple(x.shape[2:]) else
                       functional.adaptive_avg_pool2d(x, size) for size in self.sizes]
            mean, std = self.encoder(targets[0])
            image = self.decoder(mean + std * torch.randn_like(std))
            kl = 0.5 * (mean ** 2 + std ** 2 - 2 * torch.log(std) - 1).sum(1)
            loss = kl + ((targets[0] - image) ** 2).sum((1, 2, 3)) / (2 * conf.sigma ** 2)
            for refiner, target, weight in zip(self.refiners, targets[1:], self.weights):
                previous = image if conf.stage_gradient else image.detach()
                if tuple(previous.shape[2:]) != tuple(target.shape[2:]):
                    previous = functional.interpolate(previous, size=target.shape[2:],
                                                      mode='bilinear')
                image = refiner(previous)
                error = (target - image).abs() if conf.refine_loss == 'l1' else \
                    (target - image) ** 2
                loss = loss + weight * error.sum((1, 2, 3))
            return loss.mean()

    model = Model()
    for module in model.modules():  # He init, as ops.he_init (normal, not truncated)
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, a=0.0, mode='fan_in')
    return model


def measure(conf, steps, warmup, channels_last):
    """Median step time and images/s of the PyTorch model."""
    import torch
    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(conf.random_seed)
    model = build(torch, conf).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=conf.learning_rate,
                                 betas=(conf.beta1, 0.999), eps=1e-8)
    batch = torch.rand(conf.batch, conf.channel, conf.height, conf.width) * 2 - 1
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        batch = batch.contiguous(memory_format=torch.channels_last)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = model(batch)
        loss.backward()
        optimizer.step()
        return float(loss)
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    step_s = statistics.median(times)
    return {'framework': f'torch {torch.__version__}', 'step_ms': 1e3 * step_s,
            'images_per_s': conf.batch / step_s, 'channels_last': channels_last,
            'threads': torch.get_num_threads(), 'batch': conf.batch,
            'size': f'{conf.height}x{conf.width}x{conf.channel}'}


def run(_):
    """Measures the configuration of the flags and prints the table row and JSON."""
    conf = main.config_from_flags()
    main.validate(conf)
    args = flags.FLAGS
    result = measure(conf, args.steps, args.warmup, args.channels_last)
    result['label'] = args.label or f'{result["size"]} batch {conf.batch}'
    print('| config | framework | step ms | images/s |')
    print(f'| {result["label"]} | {result["framework"]}'
          f'{" channels_last" if args.channels_last else ""} | {result["step_ms"]:.1f} | '
          f'{result["images_per_s"]:.1f} |')
    print(json.dumps(result))


if __name__ == '__main__':
    app.run(run)
