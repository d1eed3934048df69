"""dropscope: where are my packets being dropped, and what do I change?"""

__version__ = "0.1.0"
