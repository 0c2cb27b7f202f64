"""Convert the WebXR generic hand (npm @webxr-input-profiles/assets, MIT, Copyright (c) 2019 Amazon)
into the skinned mesh the synthetic generator ships: keras_cadstn/assets/hands/webxr_right.npz.

    npm pack @webxr-input-profiles/assets@1.0.20 && tar xzf webxr-input-profiles-assets-1.0.20.tgz
    pip install pygltflib
    python tools/convert_webxr_hand.py package/dist/profiles/generic-hand/right.glb

The glTF's joints are all children of one armature node, each at its bind pose (OpenXR order: wrist,
thumb metacarpal .. tip, index metacarpal .. tip, ..., little finger tip), in metres with the
fingers along -y, the palm's side toward -x and the thumb toward -z. The npz holds the mesh in the
generator's hand frame: millimetres, the palm centre at the origin, fingers along -y, the thumb toward
+x, the palm facing -z (toward a camera looking along +z). The map is a proper rotation, so the right
hand stays a right hand.
"""
import argparse
import os
import sys

import numpy as np

ROTATION = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # glTF model -> hand frame
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "keras_cadstn", "assets", "hands",
                   "webxr_right.npz")


def accessor(gltf, blob, index):
    a = gltf.accessors[index]
    view = gltf.bufferViews[a.bufferView]
    if view.byteStride:
        sys.exit("interleaved buffers are not expected in this file")
    dtype = {5126: np.float32, 5121: np.uint8, 5123: np.uint16, 5125: np.uint32}[a.componentType]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}[a.type]
    offset = (view.byteOffset or 0) + (a.byteOffset or 0)
    return np.frombuffer(blob, dtype, count=a.count * width, offset=offset).reshape(a.count, width)


def main():
    import pygltflib
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("glb")
    p.add_argument("--out", default=OUT)
    args = p.parse_args()
    gltf = pygltflib.GLTF2().load(args.glb)
    blob = gltf.binary_blob()
    prim = gltf.meshes[0].primitives[0]
    skin = gltf.skins[0]
    names = [gltf.nodes[j].name for j in skin.joints]
    positions = accessor(gltf, blob, prim.attributes.POSITION).astype(np.float64)
    faces = accessor(gltf, blob, prim.indices).reshape(-1, 3).astype(np.int32)
    joints = accessor(gltf, blob, prim.attributes.JOINTS_0).astype(np.int32)
    weights = accessor(gltf, blob, prim.attributes.WEIGHTS_0).astype(np.float64)
    inverse_bind = accessor(gltf, blob, skin.inverseBindMatrices).reshape(-1, 4, 4).transpose(0, 2, 1)
    bind = np.linalg.inv(inverse_bind.astype(np.float64))  # joint frame -> model, metres
    centres = bind[:, :3, 3] @ ROTATION.T * 1000.0  # joint origins in the hand frame, mm
    wrist, middle_mcp = centres[names.index("wrist")], centres[names.index("middle-finger-phalanx-proximal")]
    palm = (wrist + middle_mcp) / 2.0  # the palm's centre: halfway from the wrist to the middle knuckle
    axes = np.einsum("ij,njk->nik", ROTATION, bind[:, :3, :3])  # joint axes in the hand frame
    np.savez_compressed(args.out, vertices=(positions @ ROTATION.T * 1000.0 - palm).astype(np.float32),
                        faces=faces, skin_joints=joints.astype(np.uint8), skin_weights=weights.astype(np.float32),
                        joint_names=np.array(names), joint_positions=(centres - palm).astype(np.float32),
                        joint_axes=axes.astype(np.float32))
    print(f"{args.out}: {len(positions)} vertices, {len(faces)} triangles, {len(names)} joints; "
          f"wrist to middle tip {np.linalg.norm(centres[names.index('middle-finger-tip')] - wrist):.0f} mm")


if __name__ == "__main__":
    main()
