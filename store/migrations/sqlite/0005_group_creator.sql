-- Which device registered each group, so that `limits.groups_created_max` can bound the
-- groups one device makes the server keep (counted while the creator is still a member).
-- Groups registered before have none and count for nobody.
ALTER TABLE groups ADD COLUMN creator_device INTEGER;
CREATE INDEX groups_creator ON groups(creator_device);
