import hashlib

import pytest

from runner.execution.outputs import NotAnImage, save_image

from .conftest import png_bytes


def png(width=20, height=10):
    return png_bytes(width, height, (10, 200, 30))


def test_saves_under_key_with_facts(tmp_path):
    data = png()
    out = save_image(tmp_path, "abc123", 0, data)
    assert out == {
        "file": "images/ab/abc123-0.png",
        "sha256": hashlib.sha256(data).hexdigest(),
        "width": 20,
        "height": 10,
        "content_type": "image/png",
        "bytes": len(data),
    }
    assert (tmp_path / out["file"]).read_bytes() == data
    assert not list((tmp_path / "images").glob("**/.*tmp"))


def test_outputs_spread_over_256_sub_folders(tmp_path):
    data = png()
    keys = [f"{i:02x}{i * 7919 % 65536:04x}" for i in range(256)] + ["00aaaa", "ffbbbb"]
    for key in keys:
        save_image(tmp_path, key, 0, data)
    folders = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert folders == [f"{i:02x}" for i in range(256)]
    assert {len(list((tmp_path / "images" / f).iterdir())) for f in folders} == {1, 2}


def test_rejects_non_images(tmp_path):
    with pytest.raises(NotAnImage):
        save_image(tmp_path, "abc", 0, b"<html>not an image</html>")
    assert not list(tmp_path.glob("images/**/abc-0.png"))


@pytest.mark.parametrize("key", ["../evil", "a/b", "..", ""])
def test_names_never_escape_the_folder(tmp_path, key):
    with pytest.raises(ValueError):
        save_image(tmp_path, key, 0, png())


def test_unwritable_images_folder_is_a_manifest_error(tmp_path):
    from runner.errors import ManifestError

    (tmp_path / "images").write_text("a file where the folder should be")
    with pytest.raises(ManifestError, match="cannot write"):
        save_image(tmp_path, "abc", 0, png())


def test_a_failed_write_leaves_no_tmp_file(tmp_path):
    from runner.errors import ManifestError

    folder = tmp_path / "images" / "ab"
    (folder / "abc123-0.png").mkdir(parents=True)  # a folder in the way: the rename fails
    with pytest.raises(ManifestError, match="cannot write"):
        save_image(tmp_path, "abc123", 0, png())
    assert [p.name for p in folder.iterdir()] == ["abc123-0.png"]


def test_two_writers_of_one_output_both_succeed(tmp_path):
    # A run stopped mid-save leaves its thread writing while the resumed run saves the same
    # output: each write needs its own temporary file, or one replaces the other's away.
    from concurrent.futures import ThreadPoolExecutor

    data = png_bytes(64, 64)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: save_image(tmp_path, "ab12", 0, data), range(400)))
    assert {r["file"] for r in results} == {results[0]["file"]}
    assert (tmp_path / results[0]["file"]).read_bytes() == data
    assert not [p for p in tmp_path.rglob("*.tmp")]
