"""Built-in model adapters, one module each, registered lazily by reference.

Third-party packages add models through the ``ctbench.adapters`` entry-point group, e.g. in
their pyproject: ``[project.entry-points."ctbench.adapters"] mymodel = "mypkg.adapter:MyEncoder"``.
"""

BUILTIN_MODELS: dict[str, str] = {
    "voxelfm": "ctbench.adapters.voxelfm:VoxelFMEncoder",
    "merlin": "ctbench.adapters.merlin:MerlinEncoder",
    "ct-fm": "ctbench.adapters.ctfm:CTFMEncoder",
    "ct-clip": "ctbench.adapters.ctclip:CTCLIPEncoder",
    "m3d": "ctbench.adapters.m3d:M3DEncoder",
    "radfm": "ctbench.adapters.radfm:RadFMEncoder",
    "spectre": "ctbench.adapters.spectre:SpectreEncoder",
    "colipri": "ctbench.adapters.colipri:ColipriEncoder",
    "hu-histogram": "ctbench.adapters.hu_histogram:HUHistogramEncoder",
    "thumbnail": "ctbench.adapters.thumbnail:ThumbnailEncoder",
    "oracle": "ctbench.adapters.oracle:OracleEncoder",
    "chance": "ctbench.adapters.chance:ChanceEncoder",
    "fmcib": "ctbench.adapters.fmcib:FMCIBEncoder",
}
