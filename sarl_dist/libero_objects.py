"""What the skill VLA knows of LIBERO's objects: their names and how to hold each family.

A VLA fine-tuned on LIBERO-90 has seen every object family in its demonstrations; here
that knowledge is a table per object type, measured from LIBERO's models (collision
geometry relative to the object's origin, in the pose the scenes place it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Words LIBERO's language uses for an object whose key says otherwise. The first is the
# name a VLM would use; a bare noun ("bowl", "mug") matches every family it names.
ALIASES: dict[str, tuple[str, ...]] = {
    "akita_black_bowl": ("black bowl", "bowl", "akita black bowl"),
    "white_bowl": ("white bowl", "bowl"),
    "cream_cheese": ("cream cheese box", "cream cheese"),
    "porcelain_mug": ("white mug", "mug", "porcelain mug"),
    "white_yellow_mug": ("yellow and white mug", "white and yellow mug", "mug"),
    "red_coffee_mug": ("red mug", "red coffee mug", "mug"),
    "chefmate_8_frypan": ("frying pan", "pan"),
    "black_book": ("book", "black book"),
    "yellow_book": ("yellow book", "book"),
    "desk_caddy": ("caddy", "desk caddy"),
    "flat_stove": ("stove",),
    "white_cabinet": ("cabinet", "white cabinet"),
    "wooden_cabinet": ("cabinet", "wooden cabinet"),
    "wooden_two_layer_shelf": ("shelf", "cabinet shelf", "cabinet"),
    "wine_rack": ("wine rack", "rack"),
    "new_salad_dressing": ("salad dressing",),
    "glazed_rim_porcelain_ramekin": ("ramekin",),
    "cookies": ("cookie box", "cookies"),
    "bbq_sauce": ("bbq sauce", "barbecue sauce"),
    "wooden_tray": ("tray", "wooden tray"),
    "moka_pot": ("moka pot", "pot"),
}


@dataclass(frozen=True)
class Shape:
    """How an object family is held and where its faces are, relative to its origin.

    bottom/top: depth of its resting face below the origin and height of its top above
    it. grasp: eef height above the origin when the fingers close (the fingertips sit
    about 12 mm below the eef). wall: offset along the fingers' closing axis, so a mug or
    bowl too wide to straddle is pinched by its wall. yaw: hand yaw relative to the
    object's own yaw (fingers across its narrow side), None for a hand square to the
    table. handle: offset of the grasp point in the object's own frame (a pan's or a
    moka pot's handle; a little nearer or farther along it when that is clearer).
    radial: a round rim, pinched on the line from the robot (the hand's length
    along it, clear of what stands beside the object): its near side when the object is
    far from the robot, its far side when near (`wall` is then the rim's radius).
    middle: where its footprint's centre is, in its own frame (what is centred on a slot).
    radius: how far its footprint reaches from there. side: the grasp for putting it in
    through an opening (a microwave's door), the hand outside: (x, y) of a handle in its
    own frame and the grasp height, the fingers across its own y axis.
    """

    bottom: float
    top: float
    grasp: float
    wall: float = 0.0
    yaw: float | None = None
    handle: tuple[float, float] = (0.0, 0.0)
    radial: bool = False
    middle: tuple[float, float] = (0.0, 0.0)
    radius: float = 0.04
    side: tuple[float, float, float] | None = None


HALF_PI = 1.5707963
SHAPES: dict[str, Shape] = {
    "akita_black_bowl": Shape(0.0, 0.052, 0.045, wall=0.047, radial=True, radius=0.054),
    "white_bowl": Shape(0.0, 0.035, 0.03, wall=0.036, radial=True, radius=0.041),
    "plate": Shape(0.003, 0.016, 0.012, wall=-0.062, radius=0.07),
    "butter": Shape(0.009, 0.009, 0.0, yaw=0.0),
    "chocolate_pudding": Shape(0.013, 0.014, 0.0, yaw=0.0),
    "cream_cheese": Shape(0.009, 0.009, 0.0, yaw=0.0),
    "cookies": Shape(0.009, 0.009, 0.0, yaw=HALF_PI),
    "alphabet_soup": Shape(0.038, 0.038, 0.0, radius=0.032),
    "tomato_sauce": Shape(0.038, 0.038, 0.0, radius=0.032),
    "ketchup": Shape(0.072, 0.073, 0.03),
    "milk": Shape(0.07, 0.061, 0.03),
    "orange_juice": Shape(0.07, 0.061, 0.03),
    "new_salad_dressing": Shape(0.023, 0.123, 0.08),
    "salad_dressing": Shape(0.073, 0.073, 0.03),
    "bbq_sauce": Shape(0.055, 0.052, 0.02),
    "porcelain_mug": Shape(0.0, 0.108, 0.09, wall=-0.045, radius=0.06, side=(-0.06, 0.0, 0.06)),
    "white_yellow_mug": Shape(0.0, 0.103, 0.09, wall=-0.045, radius=0.065, side=(0.064, 0.0, 0.06)),
    "red_coffee_mug": Shape(0.0, 0.131, 0.11, wall=-0.045, radius=0.06),
    "black_book": Shape(0.0, 0.137, 0.1, yaw=HALF_PI, middle=(0.0, -0.012), radius=0.055),
    "yellow_book": Shape(0.0, 0.124, 0.09, yaw=HALF_PI, radius=0.05),
    "wine_bottle": Shape(0.0, 0.158, 0.135),
    "moka_pot": Shape(0.066, 0.086, 0.04, yaw=-HALF_PI, handle=(0.0, 0.072), radius=0.05),
    "chefmate_8_frypan": Shape(0.0, 0.059, 0.04, yaw=0.0, handle=(0.18, 0.0), radius=0.1),
    "glazed_rim_porcelain_ramekin": Shape(0.0, 0.043, 0.035, wall=-0.04),
    "basket": Shape(0.0, 0.146, 0.12, wall=-0.08),
    "wooden_tray": Shape(0.0, 0.082, 0.06, wall=-0.13),
}
DEFAULT_SHAPE = Shape(0.03, 0.05, 0.0)


def object_type(key: str) -> str:
    """LIBERO's object type of a scene key: alphabet_soup_1 -> alphabet_soup."""
    return re.sub(r"_\d+$", "", key)


def object_phrases(key: str) -> tuple[str, ...]:
    """The words that name an object (or fixture) type, its LIBERO key's words last."""
    base = object_type(key)
    return (*ALIASES.get(base, ()), base.replace("_", " "))


def shape(key: str) -> Shape:
    return SHAPES.get(object_type(key), DEFAULT_SHAPE)
