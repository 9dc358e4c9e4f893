"""jaxkd: label smoothing, knowledge distillation and self-distillation in JAX/Flax."""
from setuptools import find_packages, setup

setup(
    name="jaxkd",
    version="0.1.0",
    description=("Label smoothing, knowledge distillation and self-distillation "
                 "as composable, jit-compiled target transforms for JAX/Flax."),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["jaxkd", "jaxkd.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.6",
        "flax>=0.10",
        "optax>=0.2.4",
        "chex>=0.1.88",
        "orbax-checkpoint>=0.11",
        "tensorflow-datasets>=4.9.6",
        "grain>=0.2.6",
        # tfds's download_and_prepare (jaxkd prepare imagenet2012) imports it without declaring it
        "importlib_resources>=5",
        "ml_collections>=0.1.1",
        "sentencepiece>=0.2",  # the subword tokenizer of the text datasets
        "sacrebleu>=2.3",  # BLEU of the translation runs
        "numpy>=1.26",
        "pillow>=9.1",  # decoding and resizing on the host (Image.Resampling, draft)
        "scikit-learn>=1.3",
        "tqdm>=4.60",
        "tensorboardX>=2.6",  # TensorBoard event files without TensorFlow
        "matplotlib>=3.7",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3.5", "tensorboard>=2.15"],  # its event reader
        # torchvision's ImageNet weights as teachers (jaxkd.models.from_torchvision) and the
        # tests that compare the *_imagenet zoo with torchvision's own models.
        "torch": ["torch>=2.0", "torchvision>=0.15", "safetensors>=0.4"],
    },
    entry_points={"console_scripts": ["jaxkd=jaxkd.cli:main"]},
)
