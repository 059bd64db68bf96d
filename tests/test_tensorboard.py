"""The TensorBoard events of a short run, read by TensorBoard's own event reader: every
documented tag, one value per summary or validation step, images that decode."""
import io

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import main

STAGE_SCALARS = ('kl', 'stage1_loss', 'stage2_loss', 'total', 'stage1_psnr', 'stage2_psnr')


def test_events_of_a_short_run_load_in_tensorboard_with_every_documented_tag(tiny_conf):
    conf = tiny_conf(max_step=10, summary_step=2, test_step=5, save_step=10)
    assert main.run(conf) == 10
    events = EventAccumulator(conf.logdir, size_guidance={'scalars': 0, 'images': 0})
    events.Reload()
    tags = events.Tags()
    expected = {f'{split}/{name}' for split in ('train', 'valid') for name in STAGE_SCALARS}
    assert expected <= set(tags['scalars'])
    assert {'valid/reconstructions', 'valid/prior_samples'} <= set(tags['images'])
    assert tags['graph']  # the graph of a run from step 0
    assert [e.step for e in events.Scalars('train/total')] == [2, 4, 6, 8, 10]
    assert [e.step for e in events.Scalars('valid/total')] == [5, 10]
    assert all(np.isfinite(e.value) for tag in expected for e in events.Scalars(tag))
    # the logged total is the weighted sum of its terms (refine weight 1)
    for kl, one, two, total in zip(*(events.Scalars(f'train/{name}') for name in
                                     ('kl', 'stage1_loss', 'stage2_loss', 'total'))):
        assert total.value == pytest.approx(kl.value + one.value + two.value, rel=1e-5)
    picture = events.Images('valid/reconstructions')[-1]
    with Image.open(io.BytesIO(picture.encoded_image_string)) as image:
        # rows: the input and two stages of 16 images in rows of 8, 16x16 pixels each
        assert image.size == (picture.width, picture.height)
        assert picture.width > 8 * 16 and picture.height > 6 * 16
