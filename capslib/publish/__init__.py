"""Publishing the series: a static site of the committed notebooks, readable with only a browser."""
