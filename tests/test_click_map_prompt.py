"""Clicks drawn as a dense prompt too (PromptEncoder click_map_sigma), for small models."""
import math

import pytest
import torch

from segapp.modeling.prompt_encoder import PromptEncoder


def encoder(sigma: float) -> PromptEncoder:
    torch.manual_seed(0)
    return PromptEncoder(embed_dim=32, image_size=256, click_map_sigma=sigma).eval()


def test_clicks_are_bumps_in_their_own_channel():
    pe = encoder(4.0)  # mask input 64 x 64 cells of 4 px
    points = torch.tensor([[[41.5, 81.5], [201.5, 9.5], [0.0, 0.0], [120.0, 120.0]]])
    labels = torch.tensor([[1, 0, -1, 2]])  # padding and box corners are not clicks
    maps = pe.draw_clicks(points, labels)
    assert maps.shape == (1, 2, 64, 64)
    # the pixel centre (42, 82) is the centre of cell (row 20, col 10): the bump's peak, exactly 1
    assert maps[0, 0].argmax().item() == 20 * 64 + 10 and maps[0, 0, 20, 10].item() == pytest.approx(1.0)
    assert maps[0, 1].argmax().item() == 2 * 64 + 50
    # one cell (4 px) away the bump is exp(-16 / (2 * 16))
    assert maps[0, 0, 20, 11].item() == pytest.approx(math.exp(-0.5), rel=1e-5)
    # nothing drawn for the box corner at (120, 120) nor for the padding point
    assert maps[0, 0, 30, 30].item() < 1e-6 and maps[0, 0, 0, 0].item() < 1e-6


def test_click_maps_start_at_zero_and_add_to_every_dense_prompt():
    pe = encoder(4.0)
    points = torch.tensor([[[50.0, 50.0]]])
    labels = torch.tensor([[1]])
    _, dense = pe((points, labels), None, None)
    # a fresh downscaler adds nothing, so trained weights without it behave as before
    assert torch.equal(dense[0], pe.no_mask_embed.weight.reshape(-1, 1, 1).expand(-1, 16, 16))
    torch.nn.init.normal_(pe.click_downscaling[-1].weight)
    mask = torch.randn(1, 1, 64, 64)
    _, dense = pe((points, labels), None, mask)
    expected = pe.mask_downscaling(mask) + pe.click_downscaling(pe.draw_clicks(points, labels))
    assert torch.allclose(dense, expected)
    # and the click's place matters: another place gives another dense embedding
    _, moved = pe((points + 100, labels), None, mask)
    assert not torch.allclose(moved, dense)


def test_off_by_default_with_no_extra_weights():
    pe = PromptEncoder(embed_dim=32, image_size=256)
    assert pe.click_map_sigma == 0 and not any("click" in k for k in pe.state_dict())
    with pytest.raises(ValueError, match="click_map_sigma"):
        PromptEncoder(embed_dim=32, image_size=256, click_map_sigma=-1)


def test_no_points_gives_empty_maps():
    maps = encoder(4.0).draw_clicks(torch.zeros(3, 0, 2), torch.zeros(3, 0, dtype=torch.long))
    assert maps.shape == (3, 2, 64, 64) and not maps.any()
