"""SMPL / HMR conventions shared by the whole package (see shared/SMPL_FACTS.md).

Everything here is a public fact about the SMPL topology or a dataset's keypoint order;
nothing is derived from licensed model weights.
"""

NUM_VERTICES = 6890
NUM_FACES = 13776
NUM_JOINTS = 24
NUM_BODY_JOINTS = 23
NUM_POSE_FEATURES = 207  # 23 joints x vec(R - I)

JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck",
    "left_collar", "right_collar", "head", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand",
)
# Kinematic tree: PARENTS[j] is the parent of joint j; the root has -1.
PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)

# smplx's 21 vertex joints, appended after the 24 kinematic joints (joints 24..44).
VERTEX_JOINT_NAMES = (
    "nose", "right_eye", "left_eye", "right_ear", "left_ear",
    "left_big_toe", "left_small_toe", "left_heel",
    "right_big_toe", "right_small_toe", "right_heel",
    "left_thumb", "left_index", "left_middle", "left_ring", "left_pinky",
    "right_thumb", "right_index", "right_middle", "right_ring", "right_pinky",
)
VERTEX_JOINT_IDS = (
    332, 6260, 2800, 4071, 583,
    3216, 3226, 3387, 6617, 6624, 6787,
    2746, 2319, 2445, 2556, 2673,
    6191, 5782, 5905, 6016, 6133,
)
NUM_SMPLX_JOINTS = NUM_JOINTS + len(VERTEX_JOINT_IDS)  # 45

# Left/right mirror of the 24 SMPL joints; axis-angle y and z components are negated too.
SMPL_FLIP_PERM = (
    0, 2, 1, 3, 5, 4, 6, 8, 7, 9, 11, 10, 12, 14, 13, 15, 17, 16, 19, 18, 21, 20, 23, 22,
)

# SPIN's J24 keypoint order (the `part` and `S` arrays of its npz files).
J24_NAMES = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow",
    "left_wrist", "neck", "head_top", "pelvis_mpii", "thorax_mpii", "spine_h36m",
    "jaw_h36m", "head_h36m", "nose", "left_eye", "right_eye", "left_ear", "right_ear",
)
# HMR's 19 keypoints = 14 LSP joints + nose, left eye, right eye, left ear, right ear.
HMR19_FROM_J24 = tuple(range(14)) + (19, 20, 21, 22, 23)
HMR19_FLIP_PERM = (5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 12, 13, 14, 16, 15, 18, 17)
J24_FLIP_PERM = (
    5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 12, 13, 14, 15, 16, 17, 18, 19, 21, 20, 23, 22,
)
# SMPL mesh vertices used as HMR's 5 face keypoints when no cocoplus regressor is given.
HMR_FACE_VERTEX_IDS = (332, 2800, 6260, 583, 4071)
"""Vertex ids of HMR's face keypoints, in J24 face-slot order (19..23 = HMR19 14..18): nose
332, left eye 2800, right eye 6260, left ear 583, right ear 4071. They are smplx's SMPL vertex
joints (``smplx.vertex_ids['smplh']``: nose 332, leye 2800, reye 6260, lear 583, rear 4071,
the table smplx's SMPL uses) and SPIN's J24 face joints (its JOINT_MAP takes 'Nose', 'Left
Eye', 'Right Eye', 'Left Ear', 'Right Ear' from those smplx joints). Used as one-hot rows
after a 14-row LSP regressor (``SMPL.hmr_keypoint_regressor``) and by the procedural body;
a model file's own 19-row ``cocoplus_regressor`` (HMR's) takes precedence."""
LSP_LEFT_HIP, LSP_RIGHT_HIP = 3, 2  # pelvis = midpoint of the hips (H3.6M protocol)

# COCO's 17 person keypoints mapped into J24.
COCO_TO_J24 = (19, 20, 21, 22, 23, 9, 8, 10, 7, 11, 6, 3, 2, 4, 1, 5, 0)

# HMR's initial camera and global orientation: s = 0.9 and pi about x (upright, image y down).
MEAN_CAMERA = (0.9, 0.0, 0.0)
MEAN_GLOBAL_ORIENT = (3.141592653589793, 0.0, 0.0)
