"""The optional C half of the BER decoder; without a compiler alarmd installs with the Python one."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "alarmd.collector._ber",
            ["src/alarmd/collector/_bermodule.c"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers", "-Wno-unused-parameter"],
        )
    ]
)
