"""The seed's StateData (amorphicutils) as its documentation describes it:
a dict of key -> value. The tests use it as the model bookmarkfs must match."""
import json


class StateData:
    def __init__(self):
        self.data = {}

    def add_element(self, key, value):
        self.data[key] = value

    def remove_element(self, key):
        del self.data[key]

    def reset(self):
        self.data = {}

    def from_bytes(self, data):
        self.data = dict(data)

    def to_bytes(self):
        return json.dumps(self.data).encode()
