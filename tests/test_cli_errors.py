"""Bad input through the real command: one line on stderr, exit status 2, no traceback, nothing written."""

from _cli import DIGITS, assert_user_error, idx_files, image_folder, kdlab, write_recipe


def test_unknown_recipe_key(tmp_path):
    recipe = write_recipe(tmp_path, {**DIGITS, "optim": {"learning_rate": 0.1}})
    assert_user_error(kdlab(tmp_path, "train", recipe, "--out", tmp_path / "run"), "unknown key 'optim.learning_rate'")
    assert not (tmp_path / "run").exists()


def test_out_of_range_value_from_an_override(tmp_path):
    recipe = write_recipe(tmp_path, DIGITS)
    result = kdlab(tmp_path, "train", recipe, "method.name=ls", "method.eps=1.5", "--out", tmp_path / "run")
    assert_user_error(result, "method.eps")
    assert not (tmp_path / "run").exists()


def test_missing_data_folder(tmp_path):
    missing = tmp_path / "nowhere"
    recipe = write_recipe(tmp_path, {**DIGITS, "data": {"source": "folder", "path": str(missing)}})
    assert_user_error(kdlab(tmp_path, "train", recipe, "--out", tmp_path / "run"), str(missing))
    assert not (tmp_path / "run").exists()


def test_corrupt_image(tmp_path):
    image_folder(tmp_path / "imgs", corrupt="train/dog/bad.png")
    recipe = write_recipe(tmp_path, {**DIGITS, "data": {"source": "folder", "path": str(tmp_path / "imgs")},
                                     "model": {"name": "resnet8"}})
    assert_user_error(kdlab(tmp_path, "train", recipe, "--out", tmp_path / "run"), "bad.png")
    assert not (tmp_path / "run").exists()


def test_label_out_of_range(tmp_path):
    idx_files(tmp_path / "mnist", [0, 1, 2, 12])
    recipe = write_recipe(tmp_path, {**DIGITS, "data": {"source": "idx", "path": str(tmp_path / "mnist")},
                                     "model": {"name": "cnn_small28"}})
    assert_user_error(kdlab(tmp_path, "train", recipe, "--out", tmp_path / "run"), "12")
    assert not (tmp_path / "run").exists()


def test_unknown_model_and_missing_recipe(tmp_path):
    recipe = write_recipe(tmp_path, {**DIGITS, "model": {"name": "resnet21"}})
    assert_user_error(kdlab(tmp_path, "train", recipe, "--out", tmp_path / "run"), "resnet21")
    assert_user_error(kdlab(tmp_path, "train", tmp_path / "nope.yaml"), "nope.yaml")
    assert not (tmp_path / "run").exists()


def test_model_that_cannot_take_the_images(tmp_path):
    image_folder(tmp_path / "tiny", size=4)  # vgg8's max-poolings cannot shrink 4x4 images that far
    recipe = write_recipe(tmp_path, {**DIGITS, "data": {"source": "folder", "path": str(tmp_path / "tiny")},
                                     "model": {"name": "vgg8"}})
    assert_user_error(kdlab(tmp_path, "train", recipe, "--out", tmp_path / "run"), "vgg8", "4x4x3")
    assert not (tmp_path / "run").exists()


def test_resume_of_something_that_is_not_a_run(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_user_error(kdlab(tmp_path, "train", "--resume", tmp_path / "empty"), "not a kdlab run directory")
