FROM condaforge/miniforge3:latest
LABEL io.github.snakemake.containerized="true"
LABEL io.github.snakemake.conda_env_hash="2e7e667e9039f7ed25edf4bc3645b6621f48183caec7ad7288730db7b788c1d4"
ENV CONDA_OVERRIDE_CUDA=12
# Conda environment:
#   source: envs/analysis.yaml
#   prefix: /conda-envs/04513c79ca1da43852bd8b4ae5121b67
#   # Metrics tables, statistics, provenance, cell states and figures: rules
#   # aggregate_metrics, statistics, provenance, cell_states, job_resources, figure_*.
#   # No torch: these jobs read prepared data, predictions and metrics through the
#   # torch-free modules perturbot.cells and perturbot.tables. perturbot itself is not
#   # installed here: jobs import it from the workflow's src/ (see the Snakefile).
#   # Versions: the major.minor of requirements.lock (tests/test_envs.py keeps them in step).
#   channels:
#     - conda-forge
#     - nodefaults
#   dependencies:
#     - python=3.11
#     - anndata=0.12
#     - matplotlib-base=3.11
#     - numba=0.68
#     - numpy=2.4
#     - pandas=2.3
#     - python-igraph=1.0
#     - scanpy=1.11
#     - scikit-learn=1.9
#     - scipy=1.17
#     - seaborn-base=0.13
#     - statsmodels=0.15
#     - umap-learn=0.5
RUN mkdir -p /conda-envs/04513c79ca1da43852bd8b4ae5121b67
COPY envs/analysis.yaml /conda-envs/04513c79ca1da43852bd8b4ae5121b67/environment.yaml
# Conda environment:
#   source: envs/data.yaml
#   prefix: /conda-envs/5909e3d4e6074e47b59c63114698873b
#   # Data download and preparation: rules download_dataset, download_archive, prepare_data.
#   # pyyaml: the dataset catalogue (perturbot.data.catalog), which names the archives.
#   # No torch: these jobs import perturbot.data, perturbot.preprocessing and the
#   # dataclasses of perturbot.config, none of which needs it. perturbot itself is not
#   # installed here: jobs import it from the workflow's src/ (see the Snakefile).
#   # Versions: the major.minor of requirements.lock (tests/test_envs.py keeps them in step).
#   channels:
#     - conda-forge
#     - nodefaults
#   dependencies:
#     - python=3.11
#     - anndata=0.12
#     - numpy=2.4
#     - pandas=2.3
#     - pooch=1.9
#     - pyyaml=6.0
#     - requests=2.34
#     - scanpy=1.11
#     - scipy=1.17
RUN mkdir -p /conda-envs/5909e3d4e6074e47b59c63114698873b
COPY envs/data.yaml /conda-envs/5909e3d4e6074e47b59c63114698873b/environment.yaml
# Conda environment:
#   source: envs/training.yaml
#   prefix: /conda-envs/294bc6cdb9d9c020d35180d3c3a34e46
#   # Model training and prediction: rules train, train_autoencoder, predict, toy_map.
#   # scanpy: marker genes of the evaluation (perturbot.markers).
#   # conda-forge's `pytorch` is built with CUDA and for the CPU; the solver picks the
#   # CUDA build where the machine has a GPU driver (the __cuda virtual package) and the
#   # CPU build elsewhere. perturbot itself is not installed here: jobs import it from
#   # the workflow's src/ (see the Snakefile).
#   # Versions: the major.minor of requirements.lock (tests/test_envs.py keeps them in step).
#   channels:
#     - conda-forge
#     - nodefaults
#   dependencies:
#     - python=3.11
#     - anndata=0.12
#     - numpy=2.4
#     - pandas=2.3
#     - pytorch=2.13
#     - scanpy=1.11
#     - scikit-learn=1.9
#     - scipy=1.17
#     - tqdm=4.70
#     - pip
#     - pip:
#         # safetensors 0.8 from PyPI (self-contained wheel): conda-forge's feedstock
#         # was last seen at 0.7
#         - safetensors==0.8.0
RUN mkdir -p /conda-envs/294bc6cdb9d9c020d35180d3c3a34e46
COPY envs/training.yaml /conda-envs/294bc6cdb9d9c020d35180d3c3a34e46/environment.yaml

RUN conda env create --prefix /conda-envs/04513c79ca1da43852bd8b4ae5121b67 --file /conda-envs/04513c79ca1da43852bd8b4ae5121b67/environment.yaml && \
    conda env create --prefix /conda-envs/5909e3d4e6074e47b59c63114698873b --file /conda-envs/5909e3d4e6074e47b59c63114698873b/environment.yaml && \
    conda env create --prefix /conda-envs/294bc6cdb9d9c020d35180d3c3a34e46 --file /conda-envs/294bc6cdb9d9c020d35180d3c3a34e46/environment.yaml && \
    conda clean --all -y
