from setuptools import find_packages, setup

setup(
    name="keras_cadstn",
    version="0.1.0",
    description="CADSTN (Context-Aware Deep Spatio-Temporal Network) 3D hand pose estimation "
                "from depth images, in TensorFlow / Keras 3",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["keras_cadstn", "keras_cadstn.*"]),
    # the trained hand detector (tools/train_detector.py makes it); the synthetic generator's hand mesh
    # (tools/convert_webxr_hand.py makes it) with its licence
    package_data={"keras_cadstn": ["assets/hand_detector.keras", "assets/hand_detector.json", "assets/hands/*",
                                   "assets/presets/*/*"]},
    python_requires=">=3.10",
    install_requires=[
        # TF 2.21 brings Keras 3; tensorflow-addons is NOT used (end of life, breaks with TF >= 2.16).
        "tensorflow>=2.21,<2.22",
        "keras>=3.10",
        "numpy>=1.26",
        "scipy>=1.11",  # NYU's joint_data.mat
        "h5py>=3.10",  # MATLAB v7.3 label files
        "opencv-python-headless>=4.9",  # PNG I/O without GUI libraries
        "matplotlib>=3.8",
        "tqdm>=4.66",
        "numba>=0.60",  # the synthetic generator's mesh rasteriser
        "tensorboard>=2.20",  # no longer pulled in by tensorflow 2.21; the TensorBoard callback needs it
    ],
    extras_require={
        "export": ["tf2onnx>=1.17", "onnx>=1.16", "onnxruntime>=1.18", "ai-edge-litert>=2.0",
                   "tensorflow-serving-api>=2.21,<2.22"],
        # depth cameras for `cadstn track`: RealSense (libusb-package supplies libusb-1.0 where the
        # system has none), OpenNI2 devices (the package wraps the OpenNI2 runtime, installed apart)
        "camera": ["pyrealsense2>=2.59", "libusb-package>=1.0.26", "openni>=2.3"],
        "test": ["pytest>=8", "pytest-xdist>=3.5", "ruff>=0.6", "jax[cpu]>=0.4.30", "tf2onnx>=1.17", "onnx>=1.16", "onnxruntime>=1.18",
                 "ai-edge-litert>=2.0", "tensorflow-serving-api>=2.21,<2.22",
                 "pyrealsense2>=2.59", "libusb-package>=1.0.26", "openni>=2.3"],
        "gpu": ["tensorflow[and-cuda]>=2.21,<2.22"],
    },
    entry_points={"console_scripts": ["cadstn=keras_cadstn.cli:main"]},
)
