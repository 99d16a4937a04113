# Creating a group and managing it: members and roles, add, remove, make admin, rename, leave.

group-create-title = New group
group-name = Group name
group-members-field = Members
group-members-hint = User names separated by commas or spaces, for example marie@interieur.gouv.fr
group-create = Create the group
group-created = The group { $name } is created: it is in your conversations.
group-error-name-empty = Give the group a name.
group-error-members-empty = Name at least one member.
group-loading = Loading the members…
group-members-heading = Members
group-role-admin = admin
group-role-member = member
group-member-line = { $user } — { $role } — { $devices ->
    [one] 1 device
   *[other] { $devices } devices
}
group-you = { $user } (you) — { $role }
group-admin-only = Only admins may remove a member, rename the group or make someone an admin. Ask: { $admins }.
group-remove = Remove { $user }
group-promote = Make { $user } an admin
group-add-field = Add members
group-add = Add
group-rename-field = New group name
group-rename = Rename
group-leave = Leave the group
group-leave-title = Leave { $name }?
group-leave-body = You will receive no more messages from this group; its history stays on this device. To come back, a member must add you again.
group-leave-confirm = Leave
group-remove-title = Remove { $user } from { $name }?
group-remove-body = All their devices are taken out of the group: { $user } receives no new messages.
group-remove-confirm = Remove
group-cancel = Cancel
group-working = Sending the change…
group-done-removed = { $user } is no longer in the group.
group-done-promoted = { $user } is now an admin.
group-done-renamed = The group is now named { $name }.
group-done-left = You are leaving the group: its members take you out of it.
group-done-added = The members are added.
group-error-not-admin = Only an admin of the group may do that. Ask one of them: { $admins }.
group-not-a-group = This conversation is between two people: it has no members to manage and no name to change.
group-more-members = This group has { $count } members; only the first 500 are listed here.
