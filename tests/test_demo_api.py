"""The demo served for real (127.0.0.1, a free port, the test_tiny model) and called with
gradio_client: the two documented endpoints, errors, concurrency and what the server exposes."""
from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segapp.service import examples, exports
from segapp.service import DemoService
from browser import served
from tiny_models import tiny_model

pytest.importorskip("gradio")
from gradio_client import Client, handle_file  # noqa: E402

PERMISSIVE_AMG = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


@pytest.fixture(scope="module")
def server():
    """(url, service, blocks) of a running demo; closed after the module."""
    service = DemoService(tiny_model(), amg_options=PERMISSIVE_AMG)
    with served(service) as (url, demo):
        yield url, service, demo


@pytest.fixture(scope="module")
def client(server):
    return Client(server[0], verbose=False)


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "shapes.png"
    Image.fromarray(examples.synthetic_image(160)).save(path)
    return path


def read_png(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_only_the_two_documented_endpoints_are_public(client):
    api = client.view_api(print_info=False, return_format="dict")
    assert set(api["named_endpoints"]) == {"/segment_image", "/segment_everything"}
    assert not api["unnamed_endpoints"]
    params = [p["parameter_name"] for p in api["named_endpoints"]["/segment_image"]["parameters"]]
    assert params == ["image", "prompts"]


def test_segment_image_endpoint(client, server, image_file):
    _, service, _ = server
    prompts = '{"points": [[80, 90], [20, 20]], "labels": [1, 0]}'
    mask_path, scores = client.predict(handle_file(str(image_file)), prompts, api_name="/segment_image")
    mask = read_png(mask_path)
    info = json.loads(scores)
    expected, expected_info = service.segment_image(image_file, prompts)
    assert mask.shape == (160, 160) and set(np.unique(mask)) <= {0, 255}
    np.testing.assert_array_equal(mask == 255, expected)
    np.testing.assert_allclose(info["scores"], expected_info["scores"], rtol=1e-5)
    assert info["best"] == expected_info["best"] and info["area"] == int(expected.sum())


def test_segment_image_reports_bad_prompts(client, image_file):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="outside the 160x160 image"):
        client.predict(handle_file(str(image_file)), '{"points": [[900, 9]]}', api_name="/segment_image")
    with pytest.raises(AppError, match="not valid JSON"):
        client.predict(handle_file(str(image_file)), "{points", api_name="/segment_image")


def test_segment_everything_endpoint(client, server, image_file):
    _, service, _ = server
    ids_path, records_json = client.predict(handle_file(str(image_file)), 4, api_name="/segment_everything")
    ids = read_png(ids_path)
    records = json.loads(records_json)
    expected_ids, expected_records = service.segment_everything_image(image_file, 4)
    np.testing.assert_array_equal(ids, expected_ids)
    assert [r["area"] for r in records] == [r["area"] for r in expected_records]
    for rec in records:
        assert ((ids == rec["id"]) <= exports.decode_rle(rec["segmentation"])).all()


@pytest.mark.slow
def test_eight_concurrent_sessions_get_their_own_results(server, tmp_path):
    """Eight clients, each with its own image and prompts, all at once."""
    url, service, _ = server
    jobs = []
    for k in range(8):
        image = np.roll(examples.synthetic_image(160, seed=k), shift=12 * k, axis=1)
        path = tmp_path / f"img{k}.png"
        Image.fromarray(image).save(path)
        prompts = json.dumps({"points": [[20 + 15 * k, 30 + 10 * k]], "labels": [1],
                              **({"box": [5, 5, 100 + 5 * k, 120]} if k % 2 else {})})
        expected, info = service.segment_image(path, prompts)  # serial reference
        jobs.append((path, prompts, expected, info))
    clients = [Client(url, verbose=False) for _ in range(8)]
    barrier = threading.Barrier(8)
    results: list = [None] * 8
    errors: list = []

    def work(k: int) -> None:
        path, prompts, _, _ = jobs[k]
        try:
            barrier.wait(timeout=60)
            results[k] = clients[k].predict(handle_file(str(path)), prompts, api_name="/segment_image")
        except Exception as err:  # reported below with the job's index
            errors.append((k, err))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert not errors, errors
    for k, (mask_path, scores) in enumerate(results):
        _, _, expected, info = jobs[k]
        np.testing.assert_array_equal(read_png(mask_path) == 255, expected, err_msg=f"session {k}")
        np.testing.assert_allclose(json.loads(scores)["scores"], info["scores"], rtol=1e-5)
    assert len({r[0] for r in results}) == 8  # eight distinct result files


# ---------------------------------------------------------------------- security
def test_binds_loopback_by_default(server):
    from segapp.cli import build_parser

    _, _, demo = server
    assert demo.server_name == "127.0.0.1"
    assert build_parser().parse_args(["demo"]).host == "127.0.0.1"


def test_serves_only_uploads_and_its_outputs(server, client, image_file):
    import httpx

    url, _, _ = server
    repo_file = Path(__file__).resolve().parents[1] / "pyproject.toml"
    for path in ("/etc/passwd", str(repo_file), str(image_file)):
        response = httpx.get(f"{url}gradio_api/file={path}")
        assert response.status_code in (403, 404), (path, response.status_code)
        assert b"[build-system]" not in response.content and b"root:" not in response.content
    # A result of the app is served (from Gradio's cache), which the client downloads.
    job = client.submit(handle_file(str(image_file)), '{"points": [[80, 90]]}', api_name="/segment_image")
    mask_path, _ = job.result()
    assert Path(mask_path).is_file()


# ---------------------------------------------------------------------- files on disk
def test_too_many_points_in_one_request_are_refused(client, image_file):
    from gradio_client.exceptions import AppError

    prompts = json.dumps({"points": [[10, 10]] * 65})
    with pytest.raises(AppError, match="65 points in one request; the limit is 64"):
        client.predict(handle_file(str(image_file)), prompts, api_name="/segment_image")


def test_the_cache_is_private_and_stays_under_its_cap(tmp_path):
    """Gradio's copies of uploads and results used to pile up (176 MB after 110 uploads):
    the app now keeps them in a folder of its own, under Limits.max_cache_bytes. (Its own
    server, launched last in this module, as launching moves Gradio's cache folder.)"""
    import os

    from segapp.demo.app import CACHE_PREFIX
    from segapp.service import Limits

    cap = 2 * 2**20
    service = DemoService(tiny_model(), limits=Limits(max_cache_bytes=cap))
    with served(service) as (url, _):
        root = Path(os.environ["GRADIO_TEMP_DIR"]).parent
        assert root.name.startswith(CACHE_PREFIX)
        client = Client(url, verbose=False)
        rng = np.random.default_rng(0)
        sizes = []
        for k in range(8):  # 8 uploads of 0.75 MB: 6 MB and more without pruning
            path = tmp_path / f"noise{k}.png"
            Image.fromarray(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)).save(path)
            mask_path, _ = client.predict(handle_file(str(path)), '{"points": [[9, 9]]}', api_name="/segment_image")
            assert Path(mask_path).is_file()  # the newest result is still served
            sizes.append(sum(f.stat().st_size for f in root.rglob("*") if f.is_file()))
        assert max(sizes) <= cap + 2**20  # a request's own files may overshoot until the next one
        assert sizes[-1] <= cap + 2**20 and len(sizes) == 8
        assert any((root / "gradio").rglob("*.png"))  # Gradio's copies are in the private folder
