"""Blueprints (issue 11): a fleet's intended state as a file. The pure part so far: loading and
checking files, deciding which blueprint owns each device, and diffing two sets of blueprints."""
