"""One arm (a WidowX, any arm, or LIBERO standing in for one) behind a small websocket +
msgpack server on the robot's PC, so the learning system can drive real hardware from
another process or machine while the robot side alone enforces the safety limits.

- safety.py: the limits applied to every action, whatever the policy sends.
- backends.py: the arm itself (any gym-style env, or a RobotBackend named module:factory).
- server.py / client.py: the wire between the robot PC and the learner.
- widowx.py: Bridge's WidowX.

This package needs none of the learner's dependencies (torch, Ray, LIBERO): a robot PC
installs only it (docs/robot.md). The person at the robot is on the learner's side
(sarl_dist/runtime/attended.py).
"""
