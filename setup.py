from setuptools import setup

# `kernels/` holds the Triton kernels and is installed as `hmr_fast.kernels`: a top-level
# `kernels` module would shadow the `kernels` package that transformers imports.
PACKAGES = [
    "hmr_fast",
    "hmr_fast.body",
    "hmr_fast.ops",
    "hmr_fast.models",
    "hmr_fast.data",
    "hmr_fast.train",
    "hmr_fast.eval",
    "hmr_fast.kernels",
]

setup(
    name="hmr-fast",
    version="0.1.0",
    description="Fast HMR (End-to-end Recovery of Human Shape and Pose) and a fused SMPL layer",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=PACKAGES,
    package_dir={"hmr_fast": "hmr_fast", "hmr_fast.kernels": "kernels"},
    package_data={"hmr_fast": ["configs/*.yaml"]},
    # Ranges, so that installing beside a user's torch never replaces it: the oldest torch is
    # the first with torch.library.triton_op (2.6); 2.11 is the GPU machines'. CI installs
    # the exact versions in constraints.txt.
    install_requires=[
        "torch>=2.6,<2.15",
        "torchvision>=0.21,<0.30",
        "numpy>=1.24,<3",
        "scipy>=1.10",
        # OpenCV 5 dropped the HOG people detector (hmr-fast predict --detect).
        "opencv-python-headless>=4.8,<5",
        "tqdm>=4.60",
        "pyyaml>=6.0",
        "numba>=0.60",  # the fused CPU skinning loops (hmr_fast/ops/skin_cpu.py)
    ],
    extras_require={
        # Training extras: TensorBoard logging (metrics.jsonl is always written) and the
        # nvtx package (torch's own NVTX bindings are used without it).
        "train": ["tensorboard>=2.14", "nvtx>=0.2"],
        "export": ["onnx>=1.16", "onnxruntime>=1.17"],  # hmr-fast export, ONNX parity
        "mpii": ["h5py>=3.0"],  # import-data --format mpii from train.h5 / valid.h5
        # smplx is the reference the benchmarks and tests compare with; the layer never
        # imports it.
        "bench": ["smplx==0.1.28", "pytest>=8", "pytest-benchmark>=4"],
        "test": ["pytest>=8", "pytest-benchmark>=4", "ruff>=0.5", "smplx==0.1.28",
                 "onnx>=1.16", "onnxruntime>=1.17", "tensorboard>=2.14", "nvtx>=0.2",
                 "h5py>=3.0"],
    },
    entry_points={"console_scripts": ["hmr-fast=hmr_fast.cli:main"]},
)
