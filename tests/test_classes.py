import random

import pytest

from pipeline.core import classes


def test_thirty_classes_with_label_equal_to_prefix_minus_one():
    assert classes.NUM_CLASSES == 30
    for index, folder in enumerate(classes.CLASS_FOLDERS):
        assert classes.numeric_prefix(folder) == index + 1
        assert classes.class_index(folder) == index
    assert classes.CLASS_NAMES[0] == "Portrait"
    assert classes.CLASS_NAMES[9] == "Waterfall"
    assert classes.CLASS_NAMES[29] == "Computer_Screens"


def test_numeric_sort_puts_10_after_9_where_alphabetical_does_not():
    shuffled = list(classes.CLASS_FOLDERS)
    random.Random(0).shuffle(shuffled)
    assert classes.sort_class_folders(shuffled) == list(classes.CLASS_FOLDERS)
    ordered = classes.sort_class_folders(
        ["10_Waterfall", "9_Mountain", "1_Portrait", "2_Group_portrait"]
    )
    assert ordered == ["1_Portrait", "2_Group_portrait", "9_Mountain", "10_Waterfall"]
    # The pitfall this module exists for: string order permutes the labels.
    assert sorted(classes.CLASS_FOLDERS)[:3] == ["10_Waterfall", "11_Snow", "12_Landscape"]


def test_names_without_prefix_sort_last():
    assert classes.sort_class_folders(["misc", "3_Kids"]) == ["3_Kids", "misc"]


@pytest.mark.parametrize(
    "folder, suggestion",
    [("10_waterfall", "10_Waterfall"), ("4_Dogs", "4_Dog"), ("29_QR", "29_QR_images")],
)
def test_unknown_folder_is_named_with_the_closest_class(folder, suggestion):
    with pytest.raises(classes.UnknownClassFolderError) as error:
        classes.class_index(folder)
    message = str(error.value)
    assert repr(folder) in message
    assert f"did you mean {suggestion!r}" in message
    assert "30_Computer_Screens" in message  # the valid names are listed


def test_unknown_folder_without_any_close_name():
    message = classes.describe_unknown_folder("holiday_pictures")
    assert "'holiday_pictures'" in message and "did you mean" not in message
