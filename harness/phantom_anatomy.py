"""Analytic anatomy of the synthetic ``phantom`` dataset.

A patient is a set of simple solids (elliptic cylinders, ellipsoids, spheres) in patient
coordinates: millimetres, RAS+ (x to the patient's right, y anterior, z superior), origin on the
midline at the level of the right hemidiaphragm. :func:`paint` evaluates HU and organ labels at any
broadcastable arrays of points, so the same code rasterises a voxel grid, places findings and
measures volumes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

BACKGROUND, LUNG, HEART, LIVER, KIDNEY, BONE, LESION = range(7)
LABELS = {0: "background", 1: "lungs", 2: "heart", 3: "liver", 4: "kidneys", 5: "bone", 6: "lesion"}
HU_AIR = -1000.0
FOV_MM = (250.0, 225.0, 195.0)  # nominal field of view along x, y, z
FOV_CENTRE = (0.0, -5.0, -10.0)  # its centre in patient coordinates
SAFE_MM = 14.0  # findings stay this far inside the nominal field of view (covers scan jitter)
FINDING_ORGAN = {"lung_nodule": LUNG, "liver_lesion": LIVER, "kidney_cyst": KIDNEY}
CONTRAST_FRACTION = 0.5  # share of scans in the portal-venous phase
# organ HU ranges (non-contrast, portal-venous); the heart value is also the aorta's blood pool.
# The unenhanced liver is set a little denser than most real livers (78-86 HU, real ~55-65) so that
# its volume shows in a 25 HU histogram apart from muscle and soft tissue: a calibration choice.
ORGAN_HU = {"liver": ((78, 86), (105, 115)), "kidney": ((27, 35), (140, 180)),
            "heart": ((35, 45), (150, 200))}
# lesion HU ranges (non-contrast, portal-venous): liver lesions are fat-containing and markedly
# hypodense (they enhance a little), nodules are solid soft tissue, cysts are water and do not enhance
LESION_HU = {"lung_nodule": ((25, 60), (50, 90)), "liver_lesion": ((-45, -25), (-40, -20)),
             "kidney_cyst": ((-10, 0), (-10, 0))}
# part-solid nodules: a solid core (this fraction of the radius) in a ground-glass rim
NODULE_CORE = (0.5, 0.7)
GROUND_GLASS_HU = (-600.0, -400.0)

# Calibration (version 5): findings large enough to move the body's HU histogram and to show on
# an 8 mm grid, each in densities that are rare elsewhere (ground glass, water, fat-containing liver
# lesions), with edges sharp enough (PARTIAL_VOLUME_SIGMA) not to fill those densities,
# and a liver whose size varies enough to be measured; the self-test's ladder checks the result.
RADIUS_MM = {"lung_nodule": (9.0, 18.0), "liver_lesion": (11.0, 24.0), "kidney_cyst": (8.0, 14.0)}
EFFUSION_MM = (30.0, 70.0)  # depth of the dependent pleural fluid
LIVER_SCALE = (0.7, 1.3)  # liver size factor (radii)


@dataclass(frozen=True)
class Ellipsoid:
    centre: tuple[float, float, float]
    radii: tuple[float, float, float]

    def inside(self, x, y, z, grow: float = 0.0):
        """Boolean array: points inside the ellipsoid with radii enlarged by ``grow`` mm."""
        (cx, cy, cz), (rx, ry, rz) = self.centre, self.radii
        return ((x - cx) / (rx + grow)) ** 2 + ((y - cy) / (ry + grow)) ** 2 + (
            (z - cz) / (rz + grow)
        ) ** 2 <= 1.0


@dataclass(frozen=True)
class Lesion:
    """A spherical finding (label 6): lung nodule, liver lesion or kidney cyst."""

    kind: str
    centre: tuple[float, float, float]
    radius: float
    hu: float
    site: str
    core: float = 1.0  # solid part: this fraction of the radius (nodules: the rest is ground glass)
    rim_hu: float = 0.0  # HU of the ground-glass rim (only where core < 1)

    @property
    def diameter_mm(self) -> int:
        return int(round(2 * self.radius))

    @property
    def volume_ml(self) -> float:
        return 4.0 / 3.0 * math.pi * self.radius**3 / 1000.0


@dataclass
class Patient:
    """All anatomy and findings of one synthetic patient (patient coordinates, mm)."""

    body: tuple[float, float]  # skin ellipse semi-axes (x, y)
    fat: float  # subcutaneous fat thickness
    muscle: float  # body-wall muscle thickness
    lungs: tuple[Ellipsoid, Ellipsoid]  # right, left (pleural cavities)
    heart: Ellipsoid
    liver: Ellipsoid
    kidneys: tuple[Ellipsoid, Ellipsoid]  # right, left
    spine: dict[str, float]
    hu: dict[str, float]
    contrast: bool = False  # portal-venous phase: enhanced blood pool, liver and kidneys
    lesions: list[Lesion] = field(default_factory=list)
    effusion: dict[str, float] = field(default_factory=dict)  # "right"/"left" -> fluid depth mm

    @property
    def cavity(self) -> tuple[float, float]:
        return (self.body[0] - self.fat - self.muscle, self.body[1] - self.fat - self.muscle)

    def fluid_level(self, side: str) -> float:
        """y of the pleural fluid surface on ``side`` (fluid lies posterior, the dependent part)."""
        lung = self.lungs[0 if side == "right" else 1]
        (cx, cy, _), (_, ry, _) = lung.centre, lung.radii
        bx, by = self.cavity
        floor = max(cy - ry, -by * math.sqrt(max(0.0, 1.0 - (cx / bx) ** 2)))
        return floor + self.effusion[side]

    def has(self, kind: str) -> bool:
        if kind == "pleural_effusion":
            return bool(self.effusion)
        return any(les.kind == kind for les in self.lesions)


def _ellipse(x, y, cx: float, cy: float, ax: float, ay: float):
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0


def _sphere(x, y, z, c: tuple[float, float, float], r: float):
    return (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 <= r * r


def paint(p: Patient, x, y, z, lesions: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free HU (float32) and labels (uint8) at points given as broadcastable arrays.

    Later structures overwrite earlier ones; lesions only overwrite their own organ.
    """
    shape = np.broadcast_shapes(np.shape(x), np.shape(y), np.shape(z))
    hu = np.full(shape, HU_AIR, np.float32)
    lab = np.zeros(shape, np.uint8)

    def put(region, value, label: int) -> None:
        np.copyto(hu, value, where=region, casting="unsafe")
        np.copyto(lab, label, where=region, casting="unsafe")

    h, s = p.hu, p.spine
    (ax, ay), (bx, by) = p.body, p.cavity
    put(_ellipse(x, y, 0, 0, ax, ay), h["fat"], BACKGROUND)
    put(_ellipse(x, y, 0, 0, ax - p.fat, ay - p.fat), h["muscle"], BACKGROUND)
    cavity = _ellipse(x, y, 0, 0, bx, by)
    put(cavity, h["soft"], BACKGROUND)
    for sx in (-1.0, 1.0):  # paraspinal muscles
        put(_ellipse(x, y, sx * s["para_x"], s["canal_y"] - 4, 19, 15), h["muscle"], BACKGROUND)
    pleura = []
    for side, lung in zip(("right", "left"), p.lungs):
        region = lung.inside(x, y, z) & cavity
        pleura.append(region)
        ly, ry = lung.centre[1], lung.radii[1]
        put(region, h["lung"] - 35.0 * (y - ly) / ry, LUNG)  # dependent lung a little denser
        if side in p.effusion:
            put(region & (y < p.fluid_level(side)), h["fluid"], BACKGROUND)
    liver = p.liver.inside(x, y, z) & cavity & ~(pleura[0] | pleura[1])
    put(liver, h["liver"], LIVER)
    for kidney in p.kidneys:
        put(kidney.inside(x, y, z) & cavity, h["kidney"], KIDNEY)
    put(p.heart.inside(x, y, z) & cavity, h["heart"], HEART)
    put(_ellipse(x, y, s["aorta_x"], s["aorta_y"], 11, 11), h["heart"], BACKGROUND)
    # vertebral bodies: cancellous core, denser cortical rim, low-density discs between them
    vert = _ellipse(x, y, 0, s["body_y"], s["body_rx"], s["body_ry"])
    core = _ellipse(x, y, 0, s["body_y"], s["body_rx"] - 3, s["body_ry"] - 3)
    disc = np.mod(z - s["disc_z"], s["period"]) < 6.0
    put(vert, h["cortical"], BONE)
    put(core, h["cancellous"], BONE)
    put(vert & disc, h["disc"], BACKGROUND)
    arch = _ellipse(x, y, 0, s["canal_y"], 12, 12)
    spinous = (np.abs(x) < 4) & (y < s["canal_y"]) & (y > s["canal_y"] - 30)
    put(arch | spinous, h["cortical"], BONE)
    put(_ellipse(x, y, 0, s["canal_y"], 7, 7), h["csf"], BACKGROUND)
    # ribs: a thin band in the chest wall, sloping down anteriorly, above the costal margin
    shell = _ellipse(x, y, 0, 0, bx + 6, by + 6) & ~cavity & (np.abs(x) > 25)
    band = (np.mod(z + 0.5 * y - s["rib_z"], s["period"]) < 9.0) & (z + 0.5 * y > -80)
    put(shell & band, h["rib"], BONE)
    if lesions:
        for les in p.lesions:
            region = _sphere(x, y, z, les.centre, les.radius) & (lab == FINDING_ORGAN[les.kind])
            if les.core < 1.0:
                put(region, les.rim_hu, LESION)
                region = region & _sphere(x, y, z, les.centre, les.core * les.radius)
            put(region, les.hu, LESION)
    return hu, lab


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def sample_patient(rng: np.random.Generator) -> Patient:
    """Draw a patient's anatomy, organ HU and findings."""
    ax, ay = _u(rng, 90, 118), _u(rng, 70, 92)
    fat, muscle = _u(rng, 5, 18), _u(rng, 7, 12)
    bx, by = ax - fat - muscle, ay - fat - muscle
    canal_y = -ay + fat + _u(rng, 36, 40)
    body_ry = _u(rng, 12, 15)
    spine = {
        "canal_y": canal_y, "body_y": canal_y + 7 + 3 + body_ry, "body_rx": _u(rng, 15, 19),
        "body_ry": body_ry, "para_x": _u(rng, 24, 28), "period": _u(rng, 26, 31),
        "disc_z": _u(rng, 0, 30), "rib_z": _u(rng, 0, 30),
    }
    spine["aorta_x"], spine["aorta_y"] = -spine["body_rx"] - 4, spine["body_y"] + body_ry - 2
    lungs = []
    for sign, dome in ((1.0, 0.0), (-1.0, -_u(rng, 8, 16))):
        rz = _u(rng, 110, 140)
        lungs.append(Ellipsoid(
            (sign * bx * _u(rng, 0.48, 0.54), -by * _u(rng, 0.0, 0.1), dome + rz),
            (bx * _u(rng, 0.42, 0.5), by * _u(rng, 0.85, 0.95), rz),
        ))
    k = _u(rng, 0.85, 1.1)
    heart = Ellipsoid((-_u(rng, 10, 20), by * _u(rng, 0.15, 0.3), _u(rng, 35, 48)),
                      (48 * k, 38 * k, 45 * k))
    size = _u(rng, *LIVER_SCALE)  # one factor for all three radii: liver volume varies ~3x
    liver = Ellipsoid((_u(rng, 30, 42), _u(rng, -5, 12), _u(rng, -40, -30)),
                      (size * _u(rng, 54, 64), size * _u(rng, 44, 52), size * _u(rng, 44, 52)))
    kidneys = tuple(
        Ellipsoid((sign * _u(rng, 45, 55), spine["body_y"] - _u(rng, 0, 8), z0 + _u(rng, -5, 5)),
                  (_u(rng, 20, 26), _u(rng, 15, 19), _u(rng, 36, 44)))
        for sign, z0 in ((1.0, -62.0), (-1.0, -54.0))
    )
    contrast = bool(rng.random() < CONTRAST_FRACTION)
    hu = {
        # tissue densities vary a little between patients; kept narrow (version 5) so that what
        # findings add to an HU histogram is not drowned by peaks sliding across its bins
        "fat": _u(rng, -106, -94), "muscle": _u(rng, 42, 48), "soft": _u(rng, 40, 45),
        "lung": _u(rng, -860, -835), "fluid": _u(rng, 12, 18), "cortical": _u(rng, 1000, 1060),
        "cancellous": _u(rng, 660, 700), "disc": _u(rng, 75, 85), "csf": _u(rng, 8, 12),
        "rib": _u(rng, 620, 680),
        **{organ: _u(rng, *ranges[contrast]) for organ, ranges in ORGAN_HU.items()},
    }
    p = Patient((ax, ay), fat, muscle, (lungs[0], lungs[1]), heart, liver,
                (kidneys[0], kidneys[1]), spine, hu, contrast)
    _add_findings(p, rng)
    return p


# 26 neighbour directions plus the centre: points checked when placing a finding
_DIRS = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], float)
_DIRS[_DIRS.any(axis=1)] /= np.linalg.norm(_DIRS[_DIRS.any(axis=1)], axis=1, keepdims=True)


def _add_findings(p: Patient, rng: np.random.Generator) -> None:
    nodule = rng.random() < 0.4
    liver_lesion = rng.random() < 0.35
    cyst = rng.random() < 0.3
    effusion = rng.random() < 0.2 + 0.25 * (nodule or liver_lesion)
    if effusion:
        side = rng.choice(["right", "left", "both"], p=[0.45, 0.35, 0.2])
        for s in ("right", "left") if side == "both" else (str(side),):
            p.effusion[s] = _u(rng, *EFFUSION_MM)
    plans = [("lung_nodule", nodule, 4, RADIUS_MM["lung_nodule"]),
             ("liver_lesion", liver_lesion, 4, RADIUS_MM["liver_lesion"]),
             ("kidney_cyst", cyst, 2, RADIUS_MM["kidney_cyst"])]
    for kind, present, most, (rmin, rmax) in plans:
        if not present:
            continue
        weights = np.array([0.4, 0.3, 0.2, 0.1])[:most]
        n = 1 + int(rng.choice(most, p=weights / weights.sum()))
        for _ in range(n):
            hu = _u(rng, *LESION_HU[kind][p.contrast])
            les = _place(p, rng, kind, _u(rng, rmin, rmax), hu)
            if les is not None and kind == "lung_nodule":
                les = replace(les, core=_u(rng, *NODULE_CORE), rim_hu=_u(rng, *GROUND_GLASS_HU))
            if les is not None:
                p.lesions.append(les)


def _organs(p: Patient, kind: str) -> list[Ellipsoid]:
    return {"lung_nodule": list(p.lungs), "liver_lesion": [p.liver],
            "kidney_cyst": list(p.kidneys)}[kind]


def _place(p: Patient, rng: np.random.Generator, kind: str, r: float, hu: float) -> Lesion | None:
    """A lesion of radius ``r`` fully inside its organ, in view, apart from other lesions."""
    organ = FINDING_ORGAN[kind]
    lo = np.array(FOV_CENTRE) - np.array(FOV_MM) / 2 + SAFE_MM + r
    hi = np.array(FOV_CENTRE) + np.array(FOV_MM) / 2 - SAFE_MM - r
    for _ in range(200):
        ell = _organs(p, kind)[int(rng.integers(len(_organs(p, kind))))]
        c = np.array(ell.centre) + rng.uniform(-1, 1, 3) * np.array(ell.radii)
        if (c < lo).any() or (c > hi).any():
            continue
        if any(np.linalg.norm(c - np.array(o.centre)) < r + o.radius + 3 for o in p.lesions):
            continue
        pts = c + (r + 2.0) * _DIRS
        _, lab = paint(p, pts[:, 0], pts[:, 1], pts[:, 2], lesions=False)
        if (lab == organ).all():
            centre = (float(c[0]), float(c[1]), float(c[2]))
            return Lesion(kind, centre, r, hu, _site(p, kind, centre))
    return None


def _site(p: Patient, kind: str, c: tuple[float, float, float]) -> str:
    """Anatomical wording for a lesion centre."""
    side = "right" if c[0] > 0 else "left"
    if kind == "lung_nodule":
        lung = p.lungs[0 if side == "right" else 1]
        height = c[2] - (lung.centre[2] - lung.radii[2])
        if c[1] < lung.centre[1] or height < 30:
            lobe = "lower"
        else:
            lobe = "middle" if side == "right" and height < 55 else "upper"
        return f"{side} {lobe} lobe"
    if kind == "liver_lesion":
        return "right hepatic lobe" if c[0] > 5 else "left hepatic lobe"
    dz = c[2] - p.kidneys[0 if side == "right" else 1].centre[2]
    pole = "upper pole of the" if dz > 12 else "lower pole of the" if dz < -12 else "interpolar"
    return f"{pole} {side} kidney"


def liver_volume_ml(p: Patient, step: float = 2.0) -> float:
    """Liver volume (lesions included) measured on a fine grid over the liver's bounding box."""
    (cx, cy, cz), (rx, ry, rz) = p.liver.centre, p.liver.radii
    axes = [np.arange(c - r, c + r + step, step) + step / 2
            for c, r in ((cx, rx), (cy, ry), (cz, rz))]
    _, lab = paint(p, axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :], False)
    return float((lab == LIVER).sum() * step**3 / 1000.0)
