"""The take-home mesh: a finished model (coarse or refine run) as a clean, UV-textured triangle mesh.

One concept per module, lower ones first: `source` (what a model gives: renders, photos, density), `geometry`
(the surface: the coarse level set, or the fused rendered depth), `clean` (pieces, holes, face budget), `atlas`
(xatlas layout, texel rasterisation, seam padding), `raycast` (per-pixel triangle and barycentrics by open3d),
`textured` (the mesh with its texture and a differentiable lookup), `bake` (photo pixels, then the most head-on
render), `fit` (a short texture fit over fixed geometry), `files` (GLB, OBJ + MTL + PNG, PLY) and `export` (the
chain, as `sin-export-mesh` runs it).
"""
