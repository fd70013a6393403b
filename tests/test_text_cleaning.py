"""Caption cleaning (config.text_encoder.clean) against PRX's pipeline in diffusers, and its place
in the encoder: applied by `encode`, unknown modes rejected."""
import numpy as np
import pytest
from diffusers.pipelines.prx.pipeline_prx import TextPreprocessor

from t2ijax.errors import ConfigError
from t2ijax.models.text import load_text_encoder
from t2ijax.models.text.cleaning import CLEANERS

# Web-caption debris of every kind the rules handle, and captions they must leave alone.
CAPTIONS = [
    "A photo of a cat, see https://www.example.com/cat?x=1 and www.cats.org!",
    "Beautiful sunset by @photo_guy over 東京 tower",
    "<p>Red&amp;blue &quot;car&quot;</p>",
    "&amp;lt;b&amp;gt;bold&amp;lt;/b&amp;gt;",
    "«Quoted» — text – here ´tick´",
    "IMG_20190101.jpg wallpaper 1920x1080 free download",
    "this-is-my-cute-little-cat",
    "Product jc6640 sale #123 #99999 1234567 j2d1a2a",
    "***SALE*** [new] {hot} | now ~ © ®",
    "worldwide free shipping on page 12, click for details",
    "'single quoted caption'",
    "Caf\u00c3\u00a9 au lait",
    "Hello... world . ok",
    "ip 192.168.0.1 here",
    "line\\nbreak",
    "  Spaces   and\ttabs \n",
    "50%25 off+today",
    "click on this now, 2:30  ",
    ".hidden",
    "",
    "A large red circle in the center, on a black background.",
    "A small blue square on the left and a large green triangle at the top, on a white background.",
]


@pytest.mark.parametrize("caption", CAPTIONS)
def test_deepfloyd_matches_prx_pipeline(caption):
    assert CLEANERS.get("deepfloyd")(caption) == TextPreprocessor().clean_text(caption)


@pytest.mark.parametrize("caption", CAPTIONS)
def test_basic_is_prx_light_cleaning_with_whitespace_collapsed(caption):
    assert CLEANERS.get("basic")(caption) == " ".join(TextPreprocessor().basic_clean(caption).split())


def test_cleaning_cases_that_matter():
    deepfloyd, basic = CLEANERS.get("deepfloyd"), CLEANERS.get("basic")
    assert deepfloyd("Red car by @bob https://cars.com/red") == "red car by"
    assert deepfloyd("photo.png of a dog") == "of a dog"
    assert deepfloyd("this_is_a_long_file_name") == "this is a long file name"
    assert deepfloyd("A cat 猫 sleeping") == "a cat sleeping"
    assert basic("Caf\u00c3\u00a9  &amp;amp; cr\u00e8me ") == "Café & crème"
    assert CLEANERS.get("none")("  As Written ") == "  As Written "


def test_encode_applies_the_cleaning_and_unknown_modes_are_rejected():
    cleaned = load_text_encoder("all-MiniLM-L6-v2", max_length=16, layer=1, clean="deepfloyd")
    plain = load_text_encoder("all-MiniLM-L6-v2", max_length=16, layer=1)
    got = cleaned.encode(["A RED circle, see https://shapes.com/red!!"])
    want = plain.encode(["a red circle, see !!"])
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_allclose(got[0], want[0], atol=1e-6)
    assert not np.array_equal(plain.encode(["A RED circle, see https://shapes.com/red!!"])[1], want[1])
    with pytest.raises(ConfigError, match="text_encoder.clean='ftfy' is not one of: basic, deepfloyd, none") as error:
        load_text_encoder("all-MiniLM-L6-v2", clean="ftfy")
    assert "\n" not in str(error.value)
