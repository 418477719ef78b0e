"""The stages that fill the work dir: the crawl runner and the Beam pipelines."""
