"""procure: IT procurement pipelines in which IT, purchasing, HR and budget owners decide together."""

__version__ = "0.1.0"
