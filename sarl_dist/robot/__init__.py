"""One arm (a WidowX, any arm, or LIBERO standing in for one) behind a small websocket +
msgpack server on the robot's PC, so the learning system can drive real hardware from
another process or machine while the robot side alone enforces the safety limits.

- safety.py: the limits applied to every action, whatever the policy sends.
- backends.py: the arm itself (LIBERO in simulation, or any gym-style env).
- server.py / client.py: the wire between the robot PC and the learner.
- operator.py: the person at the robot (reset confirmations, success marks, labels).
"""
